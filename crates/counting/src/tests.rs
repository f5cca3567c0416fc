use super::*;
use std::collections::{BTreeMap, BTreeSet};

use Reason::{ConcurrentInvocationLimitExceeded as Account_, ReservedFunctionConcurrentInvocationLimitExceeded as Reserved};

fn small(concurrency: u32, min_unreserved: u32) -> Counter<u8, u8> {
    Counter::new(Limits { concurrency, min_unreserved }, 50)
}

fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

// ---- the rules, one by one -------------------------------------------------

#[test]
fn defaults_are_lambdas() {
    let counter: Counter<u8, u8> = Counter::default();
    assert_eq!(counter.limits(&0), Limits { concurrency: 1000, min_unreserved: 100 });
    assert_eq!(counter.unreserved_capacity(&0), 1000);
    let rate: ScaleRate<u8> = ScaleRate::default();
    assert_eq!((rate.max_starts, rate.window_ms), (1000, 10_000));
}

#[test]
fn reasons_and_messages_are_lambdas() {
    assert_eq!(Reserved.as_str(), "ReservedFunctionConcurrentInvocationLimitExceeded");
    assert_eq!(Account_.to_string(), "ConcurrentInvocationLimitExceeded");
    assert_eq!(
        ReservationError::BelowMinimumUnreserved { minimum: 100 }.to_string(),
        "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [100]."
    );
}

#[test]
fn reservations_must_leave_the_minimum_unreserved() {
    let mut counter: Counter<u8, u8> = Counter::default();
    assert_eq!(counter.set_reservation(&0, &1, 900), Ok(None));
    assert_eq!(counter.unreserved_capacity(&0), 100);
    assert_eq!(counter.set_reservation(&0, &2, 1), Err(ReservationError::BelowMinimumUnreserved { minimum: 100 }));
    assert_eq!(counter.set_reservation(&0, &1, 1001), Err(ReservationError::BelowMinimumUnreserved { minimum: 100 }));
    // Replacing a reservation counts only the difference; lowering always fits.
    assert_eq!(counter.set_reservation(&0, &1, 500), Ok(Some(900)));
    assert_eq!(counter.set_reservation(&0, &2, 400), Ok(None));
    assert_eq!(counter.unreserved_capacity(&0), 100);
    assert_eq!(counter.delete_reservation(&0, &1), Some(500));
    assert_eq!(counter.delete_reservation(&0, &1), None);
    assert_eq!(counter.unreserved_capacity(&0), 600);
    // Accounts are separate.
    assert_eq!(counter.set_reservation(&1, &1, 900), Ok(None));
    assert_eq!(counter.unreserved_capacity(&1), 100);
}

#[test]
fn a_reservation_is_a_ceiling_and_zero_throttles_everything() {
    let mut counter = small(10, 2);
    counter.set_reservation(&0, &1, 2).unwrap();
    let a = counter.acquire(&0, &1).unwrap();
    let b = counter.acquire(&0, &1).unwrap();
    assert_eq!(counter.acquire(&0, &1), Err(Reserved));
    counter.release(a);
    let c = counter.acquire(&0, &1).unwrap();
    counter.release(b);
    counter.release(c);
    counter.set_reservation(&0, &2, 0).unwrap();
    assert_eq!(counter.acquire(&0, &2), Err(Reserved));
    assert_eq!(counter.in_use(&0, &2), 0);
}

#[test]
fn reserved_units_are_the_functions_own() {
    let mut counter = small(10, 2);
    counter.set_reservation(&0, &1, 4).unwrap();
    // The unreserved pool is 6, shared by every other function.
    let held: Vec<_> = (0..6).map(|i| counter.acquire(&0, &(10 + i % 3)).unwrap()).collect();
    assert_eq!(counter.acquire(&0, &20), Err(Account_));
    assert_eq!(counter.unreserved_in_use(&0), 6);
    // ...but the reserved function still gets all of its 4.
    let mine: Vec<_> = (0..4).map(|_| counter.acquire(&0, &1).unwrap()).collect();
    assert_eq!(counter.acquire(&0, &1), Err(Reserved));
    assert_eq!(counter.account_in_use(&0), 10);
    for slot in held.into_iter().chain(mine) {
        counter.release(slot);
    }
    assert_eq!(counter.account_in_use(&0), 0);
    assert!(counter.accounts[&0].functions.keys().eq([&1]), "idle functions leave the books, reservations stay");
}

#[test]
fn throttled_calls_leave_nothing_behind() {
    let mut counter = small(0, 0);
    assert_eq!(counter.acquire(&7, &7), Err(Account_));
    assert!(counter.accounts.is_empty());
}

#[test]
fn reservation_changes_move_units_in_flight_and_drain_down() {
    let mut counter = small(10, 2);
    let slots: Vec<_> = (0..5).map(|_| counter.acquire(&0, &1).unwrap()).collect();
    assert_eq!(counter.unreserved_in_use(&0), 5);
    // Reserving below what is in flight: they finish, nothing new starts until under.
    counter.set_reservation(&0, &1, 3).unwrap();
    assert_eq!((counter.unreserved_in_use(&0), counter.in_use(&0, &1)), (0, 5));
    assert_eq!(counter.acquire(&0, &1), Err(Reserved));
    let mut slots = slots.into_iter();
    for _ in 0..3 {
        counter.release(slots.next().unwrap());
    }
    let again = counter.acquire(&0, &1).unwrap();
    assert_eq!(counter.acquire(&0, &1), Err(Reserved));
    // Deleting it puts them back into the unreserved pool (7 wide now).
    counter.delete_reservation(&0, &1);
    assert_eq!(counter.unreserved_in_use(&0), 3);
    for slot in slots.chain([again]) {
        counter.release(slot);
    }
    assert_eq!(counter.account_in_use(&0), 0);
    assert!(counter.accounts[&0].functions.is_empty());
}

#[test]
fn a_reservation_taken_from_a_busy_pool_waits_for_it_to_drain() {
    // Others fill the unreserved pool, then function 1 reserves half of the account:
    // the account's limit still holds until they finish.
    let mut counter = small(10, 2);
    let others: Vec<_> = (0..10).map(|i| counter.acquire(&0, &(10 + i)).unwrap()).collect();
    counter.set_reservation(&0, &1, 5).unwrap();
    assert_eq!(counter.acquire(&0, &1), Err(Account_));
    assert_eq!(counter.acquire(&0, &2), Err(Account_));
    let mut others = others.into_iter();
    counter.release(others.next().unwrap());
    // One came back: it goes to the reserved function, the unreserved pool (5) is still over.
    let mine = counter.acquire(&0, &1).unwrap();
    assert_eq!(counter.acquire(&0, &2), Err(Account_));
    for slot in others.chain([mine]) {
        counter.release(slot);
    }
    assert_eq!(counter.account_in_use(&0), 0);
}

#[test]
fn limits_must_hold_the_reservations() {
    let mut counter = small(10, 2);
    counter.set_reservation(&0, &1, 6).unwrap();
    assert_eq!(
        counter.set_limits(&0, Limits { concurrency: 7, min_unreserved: 2 }),
        Err(LimitsError::ReservationsDoNotFit { reserved: 6, concurrency: 7, min_unreserved: 2 })
    );
    assert_eq!(
        counter.set_limits(&0, Limits { concurrency: 7, min_unreserved: 8 }),
        Err(LimitsError::MinimumAboveLimit { concurrency: 7, min_unreserved: 8 })
    );
    assert_eq!(counter.set_limits(&0, Limits { concurrency: 8, min_unreserved: 2 }), Ok(()));
    assert_eq!(counter.unreserved_capacity(&0), 2);
    assert_eq!(counter.limits(&1), Limits { concurrency: 10, min_unreserved: 2 });
}

#[test]
fn leases_grant_what_fits_and_expire_by_themselves() {
    let mut counter = small(10, 2);
    let front = counter.join(0);
    let other = counter.join(0);
    let lease = counter.lease(front, &0, &1, 4, 0).unwrap();
    assert_eq!(lease.size, 4);
    let partial = counter.lease(other, &0, &2, 100, 0).unwrap();
    assert_eq!(partial.size, 6, "only what is left");
    assert_eq!(counter.lease(other, &0, &3, 1, 0), Err(LeaseError::Throttled(Account_)));
    assert_eq!(counter.give_back(partial.id, 2), Ok(4));
    // `other` keeps renewing, `front` does not.
    assert_eq!(counter.renew(other, 40), Ok(90));
    assert_eq!(counter.expire(49), vec![]);
    assert_eq!(counter.expire(50), vec![lease.clone()]);
    assert_eq!(counter.in_use(&0, &1), 0);
    assert_eq!(counter.account_in_use(&0), 4);
    // The reaped holder is gone for good: it must learn it and join again.
    assert_eq!(counter.renew(front, 51), Err(UnknownHolder(front)));
    assert_eq!(counter.lease(front, &0, &1, 1, 51), Err(LeaseError::UnknownHolder(front)));
    assert_eq!(counter.give_back(lease.id, 1), Err(UnknownLease(lease.id)));
    // Giving back everything ends a lease.
    assert_eq!(counter.give_back(partial.id, 10), Ok(0));
    assert_eq!(counter.lease_size(partial.id), None);
    assert_eq!(counter.leave(other), Ok(vec![]));
    assert_eq!(counter.account_in_use(&0), 0);
    assert!(counter.holders.is_empty() && counter.leases.is_empty());
}

#[test]
fn scale_rate_window_is_exact() {
    let mut rate: ScaleRate<u8> = ScaleRate::new(3, 10_000);
    assert!(rate.may_start_sandbox(&1, 0));
    assert!(rate.may_start_sandbox(&1, 1));
    assert!(rate.may_start_sandbox(&1, 5_000));
    assert!(!rate.may_start_sandbox(&1, 9_999));
    assert!(rate.may_start_sandbox(&2, 9_999), "per function");
    assert!(rate.may_start_sandbox(&1, 10_000), "the start at 0 left the window");
    assert!(!rate.may_start_sandbox(&1, 10_000));
    assert!(rate.may_start_sandbox(&1, 10_001));
    assert!(!rate.may_start_sandbox(&1, 14_999));
    assert!(rate.may_start_sandbox(&1, 15_000));
    assert_eq!(rate.starts_in_window(&1, 15_000), 3);
    // Time going backwards only refuses more.
    assert!(!rate.may_start_sandbox(&1, 0));
    rate.prune(19_999);
    assert_eq!(rate.tracked(), 1);
    rate.prune(25_000);
    assert_eq!(rate.tracked(), 0);
    let mut never: ScaleRate<u8> = ScaleRate::new(0, 10_000);
    assert!(!never.may_start_sandbox(&1, 0));
}

// ---- the reference model ---------------------------------------------------

/// The rules restated over raw facts (who holds what), recounted every time.
#[derive(Default)]
struct Model {
    limits: BTreeMap<u8, Limits>,
    reservations: BTreeMap<(u8, u8), u32>,
    slots: Vec<Slot<u8, u8>>,
    leases: BTreeMap<LeaseId, (HolderId, u8, u8, u32)>,
    holders: BTreeMap<HolderId, u64>,
    reaped: Vec<HolderId>,
    gone_leases: Vec<LeaseId>,
}

impl Model {
    fn limits(&self, defaults: Limits, a: u8) -> Limits {
        self.limits.get(&a).copied().unwrap_or(defaults)
    }

    fn in_use(&self, a: u8, f: u8) -> u32 {
        let slots = self.slots.iter().filter(|s| (*s.account(), *s.function()) == (a, f)).count() as u32;
        let leased: u32 = self.leases.values().filter(|l| (l.1, l.2) == (a, f)).map(|l| l.3).sum();
        slots + leased
    }

    fn functions(&self) -> impl Iterator<Item = u8> {
        0..FUNCTIONS
    }

    fn account_in_use(&self, a: u8) -> u32 {
        self.functions().map(|f| self.in_use(a, f)).sum()
    }

    fn reserved(&self, a: u8) -> u32 {
        self.reservations.iter().filter(|((acc, _), _)| *acc == a).map(|(_, r)| r).sum()
    }

    fn unreserved_in_use(&self, a: u8) -> u32 {
        self.functions().filter(|f| !self.reservations.contains_key(&(a, *f))).map(|f| self.in_use(a, f)).sum()
    }

    /// The bounds that apply to `f`: (use, bound, reason if it is the one that is full).
    fn bounds(&self, defaults: Limits, a: u8, f: u8) -> Vec<(u32, u32, Reason)> {
        let limit = self.limits(defaults, a).concurrency;
        let account = (self.account_in_use(a), limit, Account_);
        match self.reservations.get(&(a, f)) {
            Some(r) => vec![(self.in_use(a, f), *r, Reserved), account],
            None => vec![(self.unreserved_in_use(a), limit - self.reserved(a), Account_), account],
        }
    }

    /// How many units admission must grant (≥ 1), or the reason it must throttle.
    fn room(&self, defaults: Limits, a: u8, f: u8) -> Result<u32, Reason> {
        let bounds = self.bounds(defaults, a, f);
        match bounds.iter().find(|(used, bound, _)| used >= bound) {
            Some((_, _, reason)) => Err(*reason),
            None => Ok(bounds.iter().map(|(used, bound, _)| bound - used).min().unwrap()),
        }
    }

    /// Pools over their bound: (account, Some(function) for a reservation, None for the unreserved pool or account).
    fn over(&self, defaults: Limits) -> BTreeSet<(u8, Option<u8>, u8)> {
        let mut over = BTreeSet::new();
        for a in 0..ACCOUNTS {
            let limit = self.limits(defaults, a).concurrency;
            if self.account_in_use(a) > limit {
                over.insert((a, None, 0));
            }
            if self.unreserved_in_use(a) > limit - self.reserved(a) {
                over.insert((a, None, 1));
            }
            for ((acc, f), r) in &self.reservations {
                if *acc == a && self.in_use(a, *f) > *r {
                    over.insert((a, Some(*f), 2));
                }
            }
        }
        over
    }
}

const ACCOUNTS: u8 = 2;
const FUNCTIONS: u8 = 4;

/// The counter's books agree with themselves (B1–B5, C1) and with the model.
fn check(counter: &Counter<u8, u8>, model: &Model) {
    let defaults = counter.defaults;
    for (a, account) in &counter.accounts {
        let fs = account.functions.values();
        assert_eq!(account.in_use, fs.clone().map(|f| f.in_use).sum::<u32>(), "B1");
        assert_eq!(account.unreserved_in_use, fs.clone().filter(|f| f.reservation.is_none()).map(|f| f.in_use).sum::<u32>(), "B2");
        assert_eq!(account.reserved, fs.clone().filter_map(|f| f.reservation).sum::<u32>(), "B2");
        assert!(fs.clone().all(|f| f.reservation.is_some() || f.in_use > 0), "B5");
        let Limits { concurrency, min_unreserved } = account.limits;
        assert!(min_unreserved <= concurrency && account.reserved + min_unreserved <= concurrency, "C1");
        assert_eq!(account.limits, model.limits(defaults, *a));
    }
    for a in 0..ACCOUNTS {
        assert_eq!(counter.account_in_use(&a), model.account_in_use(a), "B1 against the model");
        assert_eq!(counter.unreserved_in_use(&a), model.unreserved_in_use(a));
        assert_eq!(counter.unreserved_capacity(&a), model.limits(defaults, a).concurrency - model.reserved(a));
        for f in 0..FUNCTIONS {
            assert_eq!(counter.in_use(&a, &f), model.in_use(a, f), "B3: account {a} function {f}");
            assert_eq!(counter.reservation(&a, &f), model.reservations.get(&(a, f)).copied());
        }
    }
    // B4: leases and holders.
    assert_eq!(counter.leases.len(), model.leases.len());
    for (id, (holder, a, f, size)) in &model.leases {
        let lease = &counter.leases[id];
        assert_eq!((lease.holder, lease.account, lease.function, lease.size), (*holder, *a, *f, *size));
        assert!(*size >= 1, "B4: no empty lease");
        assert!(counter.holders[holder].leases.contains(id), "B4: a lease's holder is alive and lists it");
    }
    assert_eq!(counter.holders.keys().collect::<BTreeSet<_>>(), model.holders.keys().collect::<BTreeSet<_>>());
    for (id, holder) in &counter.holders {
        assert_eq!(holder.expires_at_ms, model.holders[id]);
        assert!(holder.leases.iter().all(|l| counter.leases[l].holder == *id));
    }
    for holder in &model.reaped {
        assert!(!counter.holders.contains_key(holder), "B4: nothing held by a reaped holder");
        assert!(counter.leases.values().all(|l| l.holder != *holder));
    }
    for lease in &model.gone_leases {
        assert_eq!(counter.lease_size(*lease), None);
    }
}

/// Every successful admission leaves every bound it checked within.
fn check_admitted(counter: &Counter<u8, u8>, model: &Model, a: u8, f: u8) {
    for (used, bound, _) in model.bounds(counter.defaults, a, f) {
        assert!(used <= bound, "K1–K3 after admitting account {a} function {f}: {used} > {bound}");
    }
}

/// Random operation sequences: after every step the books agree (`check`),
/// admission grants exactly what the rules allow, only configuration changes
/// push a pool over its bound, and an over pool never grows.
#[test]
fn random_operations_follow_the_rules() {
    let mut rand = xorshift(0x9e37_79b9_7f4a_7c15);
    let ttl = 50;
    let mut throttles = [0u32; 2];
    let mut grants = 0u32;
    let mut reaped_leases = 0u32;
    let mut over_seen = 0u32;
    for _ in 0..300 {
        let defaults = Limits { concurrency: 6, min_unreserved: 2 };
        let mut counter: Counter<u8, u8> = Counter::new(defaults, ttl);
        let mut model = Model::default();
        let mut rate: ScaleRate<u8> = ScaleRate::new(3, 100);
        let mut starts: Vec<Vec<u64>> = vec![Vec::new(); FUNCTIONS as usize];
        let mut now = 0;
        for _ in 0..400 {
            now += rand(10);
            let a = rand(u64::from(ACCOUNTS)) as u8;
            let f = rand(u64::from(FUNCTIONS)) as u8;
            let over_before = model.over(defaults);
            let mut config = false;
            match rand(14) {
                0..=2 => {
                    let expected = model.room(defaults, a, f);
                    match counter.acquire(&a, &f) {
                        Ok(slot) => {
                            assert!(expected.is_ok(), "admitted against the rules: {expected:?}");
                            model.slots.push(slot);
                            check_admitted(&counter, &model, a, f);
                            grants += 1;
                        }
                        Err(reason) => {
                            assert_eq!(Err(reason), expected.map(|_| ()), "throttled against the rules");
                            throttles[(reason == Account_) as usize] += 1;
                        }
                    }
                }
                3 | 4 if !model.slots.is_empty() => {
                    let slot = model.slots.swap_remove(rand(model.slots.len() as u64) as usize);
                    counter.release(slot);
                }
                5 => {
                    config = true;
                    let limits = model.limits(defaults, a);
                    let n = rand(u64::from(limits.concurrency) + 2) as u32;
                    let old = model.reservations.get(&(a, f)).copied();
                    let fits = model.reserved(a) - old.unwrap_or(0) + n + limits.min_unreserved <= limits.concurrency;
                    let answer = counter.set_reservation(&a, &f, n);
                    if fits {
                        assert_eq!(answer, Ok(old));
                        model.reservations.insert((a, f), n);
                    } else {
                        assert_eq!(answer, Err(ReservationError::BelowMinimumUnreserved { minimum: limits.min_unreserved }));
                    }
                }
                6 => {
                    config = true;
                    assert_eq!(counter.delete_reservation(&a, &f), model.reservations.remove(&(a, f)));
                }
                7 if rand(4) == 0 => {
                    config = true;
                    let limits = Limits { concurrency: rand(10) as u32, min_unreserved: rand(5) as u32 };
                    let ok = limits.min_unreserved <= limits.concurrency && model.reserved(a) + limits.min_unreserved <= limits.concurrency;
                    assert_eq!(counter.set_limits(&a, limits).is_ok(), ok, "{limits:?} with {} reserved", model.reserved(a));
                    if ok {
                        model.limits.insert(a, limits);
                    }
                }
                8 => {
                    if model.holders.len() < 3 && rand(2) == 0 {
                        let holder = counter.join(now);
                        assert!(!model.reaped.contains(&holder) && !model.holders.contains_key(&holder), "holder ids are never reused");
                        model.holders.insert(holder, now + ttl);
                    } else if let Some(holder) = pick_holder(&mut rand, &model) {
                        let answer = counter.renew(holder, now);
                        match model.holders.get_mut(&holder) {
                            Some(expiry) => {
                                *expiry = (*expiry).max(now + ttl);
                                assert_eq!(answer, Ok(*expiry));
                            }
                            None => assert_eq!(answer, Err(UnknownHolder(holder))),
                        }
                    }
                }
                9 | 10 => {
                    let Some(holder) = pick_holder(&mut rand, &model) else { continue };
                    let want = 1 + rand(4) as u32;
                    let answer = counter.lease(holder, &a, &f, want, now);
                    if !model.holders.contains_key(&holder) {
                        assert_eq!(answer, Err(LeaseError::UnknownHolder(holder)));
                    } else {
                        match (model.room(defaults, a, f), answer) {
                            (Ok(room), Ok(lease)) => {
                                assert_eq!(lease.size, room.min(want), "a lease is as big as fits");
                                assert_eq!((lease.holder, lease.account, lease.function), (holder, a, f));
                                model.leases.insert(lease.id, (holder, a, f, lease.size));
                                let expiry = model.holders.get_mut(&holder).unwrap();
                                *expiry = (*expiry).max(now + ttl);
                                check_admitted(&counter, &model, a, f);
                                grants += 1;
                            }
                            (Err(reason), Err(LeaseError::Throttled(got))) => {
                                assert_eq!(got, reason);
                                throttles[(reason == Account_) as usize] += 1;
                            }
                            (expected, got) => panic!("lease: expected {expected:?}, got {got:?}"),
                        }
                    }
                }
                11 => {
                    let ids: Vec<LeaseId> = model.leases.keys().chain(&model.gone_leases).copied().collect();
                    if ids.is_empty() {
                        continue;
                    }
                    let id = ids[rand(ids.len() as u64) as usize];
                    let n = rand(4) as u32;
                    let answer = counter.give_back(id, n);
                    match model.leases.get_mut(&id) {
                        Some(lease) => {
                            lease.3 -= n.min(lease.3);
                            assert_eq!(answer, Ok(lease.3));
                            if lease.3 == 0 {
                                model.leases.remove(&id);
                                model.gone_leases.push(id);
                            }
                        }
                        None => assert_eq!(answer, Err(UnknownLease(id))),
                    }
                }
                12 => {
                    let leaving = rand(8) == 0;
                    let dead: Vec<HolderId> = if leaving {
                        model.holders.keys().next().copied().into_iter().collect()
                    } else {
                        now += rand(40);
                        model.holders.iter().filter(|(_, e)| **e <= now).map(|(h, _)| *h).collect()
                    };
                    let expected: Vec<Lease<u8, u8>> = model
                        .leases
                        .iter()
                        .filter(|(_, l)| dead.contains(&l.0))
                        .map(|(id, l)| Lease { id: *id, holder: l.0, account: l.1, function: l.2, size: l.3 })
                        .collect();
                    let got = if leaving {
                        match dead.first() {
                            Some(holder) => counter.leave(*holder).unwrap(),
                            None => continue,
                        }
                    } else {
                        counter.expire(now)
                    };
                    assert_eq!(got, expected, "expire returns exactly the dead holders' blocks");
                    reaped_leases += got.len() as u32;
                    for holder in dead {
                        model.holders.remove(&holder);
                        model.reaped.push(holder);
                    }
                    for lease in got {
                        model.leases.remove(&lease.id);
                        model.gone_leases.push(lease.id);
                    }
                }
                _ => {
                    let allowed = rate.may_start_sandbox(&f, now);
                    let recent = starts[f as usize].iter().filter(|&&t| now - t < 100).count();
                    assert_eq!(allowed, recent < 3, "scale rate at {now}: {recent} starts in the window");
                    if allowed {
                        starts[f as usize].push(now);
                    }
                    // R1 over every window ending at an allowed start.
                    for w in starts[f as usize].windows(4) {
                        assert!(w[3] - w[0] >= 100, "four starts within one window: {w:?}");
                    }
                    if rand(16) == 0 {
                        rate.prune(now);
                    }
                }
            }
            check(&counter, &model);
            // Only configuration changes push a pool over its bound (admission
            // checked its own bounds in `check_admitted`, so an over pool never grows).
            let over_after = model.over(defaults);
            over_seen += over_after.len() as u32;
            if !config {
                assert!(over_after.is_subset(&over_before), "pushed a pool over: {over_before:?} → {over_after:?}");
            }
        }
        // Everything comes back.
        for slot in model.slots.drain(..) {
            counter.release(slot);
        }
        counter.expire(u64::MAX);
        model.leases.clear();
        model.holders.clear();
        for a in 0..ACCOUNTS {
            assert_eq!(counter.account_in_use(&a), 0);
        }
    }
    // The sequences really exercise both throttles, leases and over-commit.
    assert!(grants > 10_000 && throttles.iter().all(|&t| t > 1_000), "grants {grants}, throttles {throttles:?}");
    assert!(reaped_leases > 100 && over_seen > 100, "reaped {reaped_leases}, over {over_seen}");
}

fn pick_holder(rand: &mut impl FnMut(u64) -> u64, model: &Model) -> Option<HolderId> {
    let all: Vec<HolderId> = model.holders.keys().chain(&model.reaped).copied().collect();
    (!all.is_empty()).then(|| all[rand(all.len() as u64) as usize])
}

/// Every small configuration, every reservation of two functions (or none,
/// or one that is refused), and every sequence of five steps (acquire for one
/// of three functions, or release the oldest slot), walked depth first with
/// each step undone on the way back: the counter admits exactly what the
/// model does and its books agree after every step.
#[test]
fn exhaustive_small_accounts() {
    const DEPTH: u32 = 5;

    fn walk(counter: &mut Counter<u8, u8>, model: &mut Model, depth: u32, leaves: &mut u32) {
        check(counter, model);
        if depth == DEPTH {
            *leaves += 1;
            return;
        }
        let defaults = counter.defaults;
        for op in 0..4u8 {
            if op == 3 {
                if model.slots.is_empty() {
                    *leaves += 4u32.pow(DEPTH - depth - 1);
                    continue;
                }
                let slot = model.slots.remove(0);
                let (a, f) = (*slot.account(), *slot.function());
                counter.release(slot);
                walk(counter, model, depth + 1, leaves);
                // Undo: what was held fits again.
                let slot = counter.acquire(&a, &f).expect("re-acquiring what was just released");
                model.slots.insert(0, slot);
            } else {
                let expected = model.room(defaults, 0, op);
                match counter.acquire(&0, &op) {
                    Ok(slot) => {
                        assert!(expected.is_ok(), "admitted against the rules");
                        model.slots.push(slot);
                        check_admitted(counter, model, 0, op);
                        walk(counter, model, depth + 1, leaves);
                        counter.release(model.slots.pop().unwrap());
                    }
                    Err(reason) => {
                        assert_eq!(Err(reason), expected.map(|_| ()), "throttled against the rules");
                        walk(counter, model, depth + 1, leaves);
                    }
                }
            }
        }
    }

    let mut sequences = 0u32;
    for concurrency in 0..=3u32 {
        for min_unreserved in 0..=concurrency {
            let defaults = Limits { concurrency, min_unreserved };
            // Values above `concurrency + 1` stand for no reservation; `concurrency + 1` is always refused.
            for r0 in 0..=concurrency + 2 {
                for r1 in 0..=concurrency + 2 {
                    let mut counter: Counter<u8, u8> = Counter::new(defaults, 50);
                    let mut model = Model::default();
                    for (f, r) in [(0u8, r0), (1, r1)] {
                        if r > concurrency + 1 {
                            continue;
                        }
                        let fits = model.reserved(0) + r + min_unreserved <= concurrency;
                        assert_eq!(counter.set_reservation(&0, &f, r).is_ok(), fits);
                        if fits {
                            model.reservations.insert((0, f), r);
                        }
                    }
                    walk(&mut counter, &mut model, 0, &mut sequences);
                    assert_eq!(counter.account_in_use(&0), 0, "every undo gave back");
                }
            }
        }
    }
    assert_eq!(sequences, 260 * 4u32.pow(DEPTH));
}

// ---- room over a snapshot ---------------------------------------------------

/// Every small account (limit, minimum, two functions' reservations, their units in use, reached by acquiring):
/// `room` over the snapshot is exactly how many more units the books grant, with the books' reason.
#[test]
fn room_over_a_snapshot_is_what_the_books_grant() {
    for concurrency in 0..=4u32 {
        for min_unreserved in 0..=concurrency {
            for r0 in [None, Some(0), Some(1), Some(2)] {
                for r1 in [None, Some(0), Some(1), Some(3)] {
                    let reserved: u32 = r0.unwrap_or(0) + r1.unwrap_or(0);
                    if reserved + min_unreserved > concurrency {
                        continue;
                    }
                    for want in [(0u32, 0u32), (1, 0), (0, 1), (1, 1), (2, 1), (1, 2), (3, 0)] {
                        check_room(Limits { concurrency, min_unreserved }, [r0, r1], want);
                    }
                }
            }
        }
    }
}

fn check_room(limits: Limits, reservations: [Option<u32>; 2], want: (u32, u32)) {
    let mut books = small(limits.concurrency, limits.min_unreserved);
    let mut reserved = HashMap::new();
    for (f, r) in reservations.iter().enumerate() {
        if let Some(r) = r {
            books.set_reservation(&0, &(f as u8), *r).unwrap();
            reserved.insert(f as u8, *r);
        }
    }
    let mut in_use = HashMap::new();
    for (f, n) in [(0u8, want.0), (1u8, want.1)] {
        for _ in 0..n {
            if books.acquire(&0, &f).is_ok() {
                *in_use.entry(f).or_insert(0) += 1;
            }
        }
    }
    for f in 0..2u8 {
        let expected = {
            let mut grants = 0u32;
            let mut probe = small(limits.concurrency, limits.min_unreserved);
            for (g, r) in reserved.iter() {
                probe.set_reservation(&0, g, *r).unwrap();
            }
            for (g, n) in &in_use {
                for _ in 0..*n {
                    let _held = probe.acquire(&0, g).unwrap();
                }
            }
            let mut first_refusal = None;
            for _ in 0..10 {
                match probe.acquire(&0, &f) {
                    Ok(_) => grants += 1,
                    Err(reason) => {
                        first_refusal = Some(reason);
                        break;
                    }
                }
            }
            if grants == 0 { Err(first_refusal.unwrap()) } else { Ok(grants) }
        };
        assert_eq!(room(limits, &reserved, &in_use, &f), expected, "{limits:?} {reserved:?} {in_use:?} f{f}");
    }
}
