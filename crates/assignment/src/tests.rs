use super::*;

const STATES: [State; 4] = [State::Initialising, State::Idle, State::Busy, State::Dead];
const EVENTS: [Event; 10] = [
    Event::InitDone,
    Event::Ready,
    Event::InitFailed,
    Event::Released,
    Event::Failed,
    Event::Reserved,
    Event::Expired,
    Event::Retired,
    Event::Evicted,
    Event::Aged,
];

#[test]
fn state_machine_is_exactly_the_documented_table() {
    use Event::*;
    use State::*;
    let allowed = [
        (Initialising, InitDone, Busy),
        (Initialising, Ready, Idle),
        (Initialising, InitFailed, Dead),
        (Busy, Released, Idle),
        (Busy, Failed, Dead),
        (Idle, Reserved, Busy),
        (Idle, Expired, Dead),
        (Idle, Retired, Dead),
        (Idle, Evicted, Dead),
        (Idle, Aged, Dead),
    ];
    for state in STATES {
        for event in EVENTS {
            let expected = allowed.iter().find(|(s, e, _)| *s == state && *e == event).map(|(_, _, to)| *to);
            assert_eq!(next(state, event), expected, "{state:?} + {event:?}");
        }
    }
}

#[test]
fn dead_is_final() {
    for event in EVENTS {
        assert_eq!(next(State::Dead, event), None);
    }
}

fn key(s: &str) -> String {
    s.to_string()
}

#[test]
fn cold_then_warm_reuse() {
    let mut pool = Pool::new();
    let a = key("a");
    let first = pool.reserve(&a);
    let Reservation::Cold(id) = first else { panic!("first reservation must be cold: {first:?}") };
    assert_eq!(pool.state(id), Some(State::Initialising));
    assert_eq!(pool.report(id, Event::InitDone, 0), Ok(State::Busy));
    // Busy: a second invocation gets a new sandbox.
    let second = pool.reserve(&a);
    assert!(matches!(second, Reservation::Cold(other) if other != id));
    assert_eq!(pool.report(id, Event::Released, 10), Ok(State::Idle));
    assert_eq!(pool.reserve(&a), Reservation::Warm(id));
    assert_eq!(pool.state(id), Some(State::Busy));
}

#[test]
fn keys_do_not_share_sandboxes() {
    let mut pool = Pool::new();
    let id = pool.reserve(&key("a")).id();
    pool.report(id, Event::InitDone, 0).unwrap();
    pool.report(id, Event::Released, 0).unwrap();
    assert!(matches!(pool.reserve(&key("b")), Reservation::Cold(_)));
    assert_eq!(pool.reserve(&key("a")), Reservation::Warm(id));
}

#[test]
fn most_recently_used_first() {
    let mut pool = Pool::new();
    let a = key("a");
    let x = pool.reserve(&a).id();
    let y = pool.reserve(&a).id();
    for id in [x, y] {
        pool.report(id, Event::InitDone, 0).unwrap();
    }
    pool.report(x, Event::Released, 1).unwrap();
    pool.report(y, Event::Released, 2).unwrap();
    assert_eq!(pool.reserve(&a), Reservation::Warm(y));
    assert_eq!(pool.reserve(&a), Reservation::Warm(x));
}

#[test]
fn failed_and_init_failed_sandboxes_leave_the_pool() {
    let mut pool = Pool::new();
    let a = key("a");
    let x = pool.reserve(&a).id();
    assert_eq!(pool.report(x, Event::InitFailed, 0), Ok(State::Dead));
    assert_eq!(pool.state(x), None);
    let y = pool.reserve(&a).id();
    pool.report(y, Event::InitDone, 0).unwrap();
    assert_eq!(pool.report(y, Event::Failed, 0), Ok(State::Dead));
    assert!(matches!(pool.reserve(&a), Reservation::Cold(z) if z != x && z != y));
    // Reports about a sandbox that is gone are refused, not applied.
    assert_eq!(pool.report(y, Event::Released, 0), Err(InvalidTransition { id: y, state: None, event: Event::Released }));
}

#[test]
fn pool_decisions_cannot_be_reported() {
    let mut pool = Pool::new();
    let id = pool.reserve(&key("a")).id();
    pool.report(id, Event::InitDone, 0).unwrap();
    pool.report(id, Event::Released, 0).unwrap();
    for event in [Event::Reserved, Event::Expired, Event::Retired, Event::Evicted, Event::Aged] {
        assert!(pool.report(id, event, 0).is_err());
    }
    assert_eq!(pool.state(id), Some(State::Idle));
}

#[test]
fn expiry_after_keep_alive() {
    let mut pool = Pool::new();
    let a = key("a");
    let x = pool.reserve(&a).id();
    let y = pool.reserve(&a).id();
    let busy = pool.reserve(&a).id();
    for id in [x, y, busy] {
        pool.report(id, Event::InitDone, 0).unwrap();
    }
    pool.report(x, Event::Released, 100).unwrap();
    pool.report(y, Event::Released, 500).unwrap();
    assert_eq!(pool.expire(1099, 1000), vec![]);
    assert_eq!(pool.expire(1100, 1000), vec![x]);
    assert_eq!(pool.expire(10_000, 1000), vec![y]);
    // Busy sandboxes never expire.
    assert_eq!(pool.state(busy), Some(State::Busy));
    assert_eq!(pool.counts(), (0, 0, 1));
    assert!(matches!(pool.reserve(&a), Reservation::Cold(_)));
}

#[test]
fn sandboxes_past_their_renewal_time_are_never_handed_out() {
    let mut pool = Pool::new();
    let a = key("a");
    let (old, busy, young) = (pool.reserve(&a).id(), pool.reserve(&a).id(), pool.reserve(&a).id());
    let provisioned = pool.provision(&a);
    assert!(pool.renew_at(old, 1000) && pool.renew_at(busy, 1000) && pool.renew_at(young, 5000));
    assert!(pool.is_provisioned(provisioned) && !pool.is_provisioned(old) && !pool.is_provisioned(SandboxId(999)));
    assert!(pool.renew_at(provisioned, 1000));
    assert!(!pool.renew_at(SandboxId(999), 1000), "unknown");
    for id in [old, busy, young] {
        pool.report(id, Event::InitDone, 0).unwrap();
    }
    pool.report(provisioned, Event::Ready, 0).unwrap();
    pool.report(old, Event::Released, 10).unwrap();
    pool.report(young, Event::Released, 20).unwrap();
    assert_eq!(pool.renew(999), vec![], "not yet");
    assert_eq!(pool.counts(), (0, 3, 1));
    // From its renewal time on: idle ones die, provisioned or not; the busy one dies when released.
    assert_eq!(pool.renew(1000), vec![old, provisioned]);
    assert_eq!(pool.provisioned(&a), (0, 0), "to be started again");
    assert_eq!(pool.report(busy, Event::Released, 1000), Ok(State::Dead));
    assert_eq!(pool.reserve(&a), Reservation::Warm(young));
    pool.report(young, Event::Released, 4999).unwrap();
    assert_eq!(pool.renew(4999), vec![]);
    assert_eq!(pool.renew(6000), vec![young]);
    assert!(matches!(pool.reserve(&a), Reservation::Cold(_)));
    // Without a renewal time, a sandbox never ages.
    let (_, idle, _) = pool.counts();
    assert_eq!(idle, 0);
}

#[test]
fn retire_kills_idle_now_and_busy_on_release() {
    let mut pool = Pool::new();
    let a = key("a");
    let idle = pool.reserve(&a).id();
    let busy = pool.reserve(&a).id();
    let initialising = pool.reserve(&a).id();
    let other = pool.reserve(&key("b")).id();
    for id in [idle, busy, other] {
        pool.report(id, Event::InitDone, 0).unwrap();
    }
    pool.report(idle, Event::Released, 0).unwrap();
    pool.report(other, Event::Released, 0).unwrap();
    assert_eq!(pool.retire(&a), vec![idle]);
    assert_eq!(pool.report(busy, Event::Released, 1), Ok(State::Dead));
    assert_eq!(pool.report(initialising, Event::InitDone, 1), Ok(State::Busy));
    assert_eq!(pool.report(initialising, Event::Released, 1), Ok(State::Dead));
    assert_eq!(pool.reserve(&key("b")), Reservation::Warm(other));
    // A new sandbox for the retired key is a fresh one and reusable.
    let fresh = pool.reserve(&a).id();
    pool.report(fresh, Event::InitDone, 2).unwrap();
    assert_eq!(pool.report(fresh, Event::Released, 2), Ok(State::Idle));
}

#[test]
fn a_lost_sandbox_leaves_the_pool_in_any_state() {
    let mut pool = Pool::new();
    let a = key("a");
    let Reservation::Cold(busy) = pool.reserve(&a) else { panic!() };
    pool.report(busy, Event::InitDone, 0).unwrap();
    let Reservation::Cold(idle) = pool.reserve(&a) else { panic!() };
    pool.report(idle, Event::InitDone, 0).unwrap();
    pool.report(idle, Event::Released, 0).unwrap();
    let provisioned = pool.provision(&a);
    pool.report(provisioned, Event::Ready, 0).unwrap();
    let initialising = pool.provision(&a);
    assert_eq!(pool.provisioned(&a), (1, 1));
    assert_eq!(pool.remove(busy), Some(State::Busy));
    assert_eq!(pool.remove(idle), Some(State::Idle));
    assert_eq!(pool.remove(provisioned), Some(State::Idle));
    assert_eq!(pool.remove(initialising), Some(State::Initialising));
    assert_eq!(pool.remove(idle), None);
    assert_eq!(pool.provisioned(&a), (0, 0));
    assert_eq!(pool.counts(), (0, 0, 0));
    // What the invocation on it reports later is refused; nothing idle is handed out.
    assert!(pool.report(busy, Event::Released, 1).is_err());
    assert!(matches!(pool.reserve(&a), Reservation::Cold(_)));
}

#[test]
fn drain_returns_everything() {
    let mut pool = Pool::new();
    let x = pool.reserve(&key("a")).id();
    let y = pool.reserve(&key("b")).id();
    pool.report(y, Event::InitDone, 0).unwrap();
    pool.report(y, Event::Released, 0).unwrap();
    assert_eq!(pool.drain(), vec![x, y]);
    assert_eq!(pool.counts(), (0, 0, 0));
    assert!(matches!(pool.reserve(&key("b")), Reservation::Cold(_)));
}

/// Random operation sequences against the pool; after every step the idle
/// lists and the entries agree, and nothing is handed out twice.
#[test]
fn random_operations_keep_the_books_consistent() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..200 {
        let mut pool: Pool<u64> = Pool::new();
        let mut initialising = Vec::new();
        let mut provisioning = Vec::new();
        let mut busy = Vec::new();
        let mut now = 0;
        for _ in 0..300 {
            now += rand(50);
            match rand(8) {
                0 | 1 => {
                    pool.renew(now);
                    match pool.reserve(&rand(3)) {
                        Reservation::Warm(id) => {
                            assert!(!busy.contains(&id) && !initialising.contains(&id));
                            assert!(!pool.entries[&id].spent(now), "renewed before it was handed out");
                            busy.push(id);
                        }
                        Reservation::Cold(id) => initialising.push(id),
                    }
                }
                6 => {
                    let k = rand(3);
                    provisioning.push(pool.provision(&k));
                }
                7 if rand(3) == 0 => {
                    pool.unprovision(&rand(3), rand(3) as usize, now);
                }
                7 if rand(2) == 0 && !pool.entries.is_empty() => {
                    // A sandbox's credentials were minted: it ages from some time on.
                    let mut ids: Vec<SandboxId> = pool.entries.keys().copied().collect();
                    ids.sort();
                    assert!(pool.renew_at(ids[rand(ids.len() as u64) as usize], now + rand(400)));
                    for id in pool.renew(now) {
                        assert!(!busy.contains(&id) && !initialising.contains(&id) && !provisioning.contains(&id));
                        assert!(!pool.entries.contains_key(&id));
                    }
                }
                7 => {
                    // A new sandbox needs memory: the least recently used idle one goes.
                    if let Some(&id) = pool.evictable().first() {
                        assert_eq!(pool.evict(id), Ok(()));
                        assert_eq!(pool.state(id), None);
                        assert!(pool.evict(id).is_err());
                    }
                }
                2 if !provisioning.is_empty() => {
                    let id = provisioning.swap_remove(rand(provisioning.len() as u64) as usize);
                    let event = if rand(5) == 0 { Event::InitFailed } else { Event::Ready };
                    pool.report(id, event, now).unwrap();
                }
                2 if !initialising.is_empty() => {
                    let id = initialising.swap_remove(rand(initialising.len() as u64) as usize);
                    if rand(5) == 0 {
                        assert_eq!(pool.report(id, Event::InitFailed, now), Ok(State::Dead));
                    } else {
                        assert_eq!(pool.report(id, Event::InitDone, now), Ok(State::Busy));
                        busy.push(id);
                    }
                }
                3 if !busy.is_empty() => {
                    let id = busy.swap_remove(rand(busy.len() as u64) as usize);
                    let event = if rand(4) == 0 { Event::Failed } else { Event::Released };
                    pool.report(id, event, now).unwrap();
                }
                5 if rand(2) == 0 && !pool.entries.is_empty() => {
                    // Its worker was lost.
                    let mut ids: Vec<SandboxId> = pool.entries.keys().copied().collect();
                    ids.sort();
                    let id = ids[rand(ids.len() as u64) as usize];
                    let state = pool.state(id);
                    assert_eq!(pool.remove(id), state);
                    assert_eq!(pool.remove(id), None);
                    for tracked in [&mut initialising, &mut provisioning, &mut busy] {
                        tracked.retain(|other| *other != id);
                    }
                }
                4 => {
                    for id in pool.expire(now, 200) {
                        assert!(!busy.contains(&id) && !initialising.contains(&id));
                        assert!(!pool.entries.contains_key(&id));
                    }
                    for key in 0..3 {
                        let provisioned_idle = pool.idle.get(&key).into_iter().flatten().filter(|id| pool.entries[id].provisioned);
                        assert!(provisioned_idle.count() <= pool.provisioned(&key).1);
                    }
                }
                _ => {
                    for id in pool.retire(&rand(3)) {
                        assert!(!busy.contains(&id) && !initialising.contains(&id));
                    }
                }
            }
            for (key, ids) in &pool.idle {
                for id in ids {
                    let entry = &pool.entries[id];
                    assert_eq!(entry.state, State::Idle);
                    assert_eq!(&entry.key, key);
                }
            }
            // Evictable: exactly the ordinary idle sandboxes, least recently used first.
            let mut expected: Vec<(u64, SandboxId)> = pool
                .entries
                .iter()
                .filter(|(_, e)| e.state == State::Idle && !e.provisioned)
                .map(|(id, e)| (e.idle_since, *id))
                .collect();
            expected.sort();
            assert_eq!(pool.evictable(), expected.into_iter().map(|(_, id)| id).collect::<Vec<_>>());
            for id in busy.iter().chain(&initialising).chain(&provisioning) {
                assert!(pool.evict(*id).is_err(), "only idle sandboxes are evicted");
            }
            let idle_total: usize = pool.idle.values().map(Vec::len).sum();
            let (init, idle, in_use) = pool.counts();
            assert_eq!(idle, idle_total);
            assert_eq!(init, initialising.len() + provisioning.len());
            assert_eq!(in_use, busy.len());
        }
    }
}

#[test]
fn provisioned_sandboxes_are_ready_idle_and_never_expire() {
    let mut pool = Pool::new();
    let a = key("a");
    let p = pool.provision(&a);
    assert_eq!(pool.provisioned(&a), (1, 0));
    assert_eq!(pool.report(p, Event::Ready, 0), Ok(State::Idle));
    assert_eq!(pool.provisioned(&a), (0, 1));
    // Handed out warm, and back.
    assert_eq!(pool.reserve(&a), Reservation::Warm(p));
    assert_eq!(pool.provisioned(&a), (0, 1));
    assert_eq!(pool.report(p, Event::Released, 5), Ok(State::Idle));
    assert!(pool.expire(1_000_000, 10).is_empty());
    assert_eq!(pool.state(p), Some(State::Idle));
    // Made ordinary: it ages from now.
    assert_eq!(pool.unprovision(&a, 5, 1_000_000), 1);
    assert_eq!(pool.provisioned(&a), (0, 0));
    assert!(pool.expire(1_000_005, 10).is_empty());
    assert_eq!(pool.expire(1_000_010, 10), vec![p]);
}

#[test]
fn unprovision_prefers_idle_and_failures_leave_the_count() {
    let mut pool = Pool::new();
    let a = key("a");
    let ids: Vec<SandboxId> = (0..3).map(|_| pool.provision(&a)).collect();
    for id in &ids {
        pool.report(*id, Event::Ready, 0).unwrap();
    }
    let busy = pool.reserve(&a).id();
    assert_eq!(pool.unprovision(&a, 2, 1), 2);
    assert_eq!(pool.provisioned(&a), (0, 1));
    // The busy one stayed provisioned; its failure takes it out.
    assert_eq!(pool.report(busy, Event::Failed, 2), Ok(State::Dead));
    assert_eq!(pool.provisioned(&a), (0, 0));
    // Retired keys count for nothing.
    let b = pool.provision(&a);
    pool.retire(&a);
    assert_eq!(pool.provisioned(&a), (0, 0));
    assert_eq!(pool.report(b, Event::Ready, 3), Ok(State::Dead));
}

#[test]
fn eviction_takes_ordinary_idle_sandboxes_least_recently_used_first() {
    let mut pool = Pool::new();
    let (a, b) = (key("a"), key("b"));
    let ids: Vec<SandboxId> = [&a, &b, &a, &b].into_iter().map(|k| pool.reserve(k).id()).collect();
    for id in &ids {
        pool.report(*id, Event::InitDone, 0).unwrap();
    }
    // Released in the order 2, 0, 3; 1 stays busy.
    for (t, i) in [(10, 2), (20, 0), (30, 3)] {
        pool.report(ids[i], Event::Released, t).unwrap();
    }
    let provisioned = pool.provision(&a);
    let initialising = pool.provision(&b);
    pool.report(provisioned, Event::Ready, 5).unwrap();
    assert_eq!(pool.evictable(), vec![ids[2], ids[0], ids[3]], "any key, least recently used first, never provisioned");
    let refused = |state| Err(InvalidTransition { id: ids[1], state: Some(state), event: Event::Evicted });
    assert_eq!(pool.evict(ids[1]), refused(State::Busy), "busy");
    assert!(pool.evict(provisioned).is_err(), "provisioned");
    assert!(pool.evict(initialising).is_err(), "initialising");
    assert_eq!(pool.evict(SandboxId(999)), Err(InvalidTransition { id: SandboxId(999), state: None, event: Event::Evicted }));
    assert_eq!(pool.evict(ids[2]), Ok(()));
    assert_eq!(pool.state(ids[2]), None);
    assert_eq!(pool.evictable(), vec![ids[0], ids[3]]);
    // `a` still has its other idle sandboxes (the last one released first); then none.
    assert_eq!(pool.reserve(&a), Reservation::Warm(provisioned));
    assert_eq!(pool.reserve(&a), Reservation::Warm(ids[0]));
    assert!(matches!(pool.reserve(&a), Reservation::Cold(_)));
    assert_eq!(pool.counts(), (2, 1, 3));
}

#[test]
fn an_adopted_sandbox_is_handed_out_only_once_ready_and_keeps_its_kind() {
    let mut pool = Pool::new();
    let a = key("a");
    let ordinary = pool.adopt(&a, false);
    let provisioned = pool.adopt(&a, true);
    let let_go = pool.adopt(&a, false);
    assert_ne!(ordinary, provisioned);
    // Not handed out while it is being taken over.
    assert!(matches!(pool.reserve(&a), Reservation::Cold(_)));
    assert_eq!(pool.provisioned(&a), (1, 0));
    assert_eq!(pool.report(ordinary, Event::Ready, 10), Ok(State::Idle));
    assert_eq!(pool.report(provisioned, Event::Ready, 10), Ok(State::Idle));
    assert_eq!(pool.remove(let_go), Some(State::Initialising));
    assert_eq!(pool.provisioned(&a), (0, 1));
    // The ordinary one ages from when it was taken; the provisioned one never does.
    assert_eq!(pool.expire(20, 10), vec![ordinary]);
    assert_eq!(pool.state(provisioned), Some(State::Idle));
    // One whose renewal time came while it was taken over dies instead of going idle.
    let aged = pool.adopt(&a, false);
    assert!(pool.renew_at(aged, 5));
    assert_eq!(pool.report(aged, Event::Ready, 10), Ok(State::Dead));
}
