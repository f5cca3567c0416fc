use super::*;

fn f(n: u64) -> FunctionKey {
    FunctionKey(n)
}

fn needs(function: u64, memory_mb: u64) -> Needs {
    Needs { function: f(function), memory_mb }
}

/// A worker of `capacity` MB with sandboxes already placed: (function, MB) each.
fn worker(id: u32, capacity: u64, placed: &[(u64, u64)]) -> Worker {
    let mut w = Worker::new(WorkerId(id), capacity, 8);
    for &(function, mb) in placed {
        w.add(&needs(function, mb)).expect("test setup fits");
    }
    w
}

/// Any of the strategies, cloneable (to check that a copy of one decides the same).
#[derive(Debug, Clone)]
enum Any {
    RoundRobin(RoundRobin),
    LeastLoaded(LeastLoaded),
    Packing(Packing),
}

impl Strategy for Any {
    fn name(&self) -> &'static str {
        match self {
            Any::RoundRobin(s) => s.name(),
            Any::LeastLoaded(s) => s.name(),
            Any::Packing(s) => s.name(),
        }
    }

    fn place(&mut self, workers: &[Worker], needs: &Needs) -> Placement {
        match self {
            Any::RoundRobin(s) => s.place(workers, needs),
            Any::LeastLoaded(s) => s.place(workers, needs),
            Any::Packing(s) => s.place(workers, needs),
        }
    }
}

fn strategies() -> Vec<Any> {
    vec![Any::RoundRobin(RoundRobin::new()), Any::LeastLoaded(LeastLoaded), Any::Packing(Packing::default())]
}

fn by_id(workers: &[Worker], id: WorkerId) -> &Worker {
    workers.iter().find(|w| w.id == id).expect("a chosen worker is one of the workers")
}

/// The invariants every decision of every strategy keeps.
fn check(name: &str, workers: &[Worker], needs: &Needs, decision: Placement) {
    let room = workers.iter().any(|w| w.healthy && w.fits(needs.memory_mb));
    match decision {
        Placement::Worker(id) => {
            let w = by_id(workers, id);
            assert!(w.healthy, "{name}: chose unhealthy {id} for {needs:?}");
            assert!(w.used_memory_mb + needs.memory_mb <= w.memory_mb, "{name}: over-commits {id} with {needs:?}: {w:?}");
        }
        Placement::Refused(reason) => {
            assert!(!room, "{name}: refused {needs:?} ({reason}) though a healthy worker has room: {workers:?}");
            assert_eq!(Some(reason), refusal(workers, needs), "{name}: refusal reason");
        }
    }
    if name.starts_with("packing") {
        check_packing(&Packing::default(), workers, needs, decision);
    }
}

/// Packing's own rules, from the module docs.
fn check_packing(p: &Packing, workers: &[Worker], needs: &Needs, decision: Placement) {
    let Placement::Worker(id) = decision else { return };
    let mem = needs.memory_mb;
    let candidates: Vec<&Worker> = workers.iter().filter(|w| w.healthy && w.fits(mem)).collect();
    let chosen = by_id(workers, id);
    let after = chosen.ppm_after(mem);
    let within: Vec<&Worker> = candidates.iter().copied().filter(|w| w.ppm_after(mem) <= p.target_ppm).collect();
    if within.is_empty() {
        // Fallback: the most headroom.
        let least = candidates.iter().map(|w| w.ppm_after(mem)).min().unwrap();
        assert_eq!(after, least, "fallback chose {id} at {after} ppm, least full after placing is {least}");
    } else {
        assert!(after <= p.target_ppm, "went above target ({after} ppm) though {} candidates stay within", within.len());
        // One of the first `mix_window` busy ones within target, and none before it has as few copies; an empty
        // one only if no busy one is within target, and then the first.
        let busy: Vec<&Worker> = within.iter().copied().filter(|w| w.sandboxes() > 0).collect();
        if busy.is_empty() {
            assert_eq!(id, within[0].id, "no busy worker within target: the first empty one");
            return;
        }
        let window = &busy[..busy.len().min(p.mix_window.max(1))];
        let at = window.iter().position(|w| w.id == id);
        let at = at.unwrap_or_else(|| panic!("chose {id}, not among the first {} within target", window.len()));
        let copies = chosen.copies(needs.function);
        for (i, w) in window.iter().enumerate() {
            let theirs = w.copies(needs.function);
            assert!(theirs >= copies, "{} has fewer copies than chosen {id}", w.id);
            assert!(i >= at || theirs > copies, "{} comes first with as few copies as chosen {id}", w.id);
        }
    }
}

fn place_and_check(s: &mut dyn Strategy, workers: &[Worker], needs: &Needs) -> Placement {
    let name = s.name();
    let decision = s.place(workers, needs);
    check(name, workers, needs, decision);
    decision
}

/// Every combination of three small workers (capacity 4 units: used 0..=4,
/// healthy or not), each need 0..=5 units: every strategy keeps the invariants.
#[test]
fn exhaustive_small_fleets_keep_the_invariants() {
    let unit = 256;
    let mut cases = 0;
    for state in 0..(10u32 * 10 * 10) {
        let workers: Vec<Worker> = (0..3u32)
            .map(|i| {
                let s = state / 10u32.pow(i) % 10;
                let used = u64::from(s % 5);
                let mut w = worker(i, 4 * unit, &vec![(u64::from(i), unit); used as usize]);
                w.healthy = s < 5;
                w
            })
            .collect();
        for units in 0..=5 {
            for function in 0..3 {
                let n = needs(function, units * unit);
                for mut s in strategies() {
                    place_and_check(&mut s, &workers, &n);
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 1000 * 6 * 3 * 3);
}

#[test]
fn refusal_reasons() {
    assert_eq!(Packing::default().choose(&[], &needs(1, 128)), Placement::Refused(Refusal::NoHealthyWorker));
    let mut sick = worker(0, 1024, &[]);
    sick.healthy = false;
    let fleet = [sick.clone(), worker(1, 1024, &[(1, 900)]), worker(2, 2048, &[(1, 2000)])];
    for mut s in strategies() {
        assert_eq!(s.place(&[sick.clone()], &needs(1, 128)), Placement::Refused(Refusal::NoHealthyWorker));
        assert_eq!(s.place(&fleet, &needs(1, 4096)), Placement::Refused(Refusal::TooLarge { largest_mb: 2048 }));
        assert_eq!(s.place(&fleet, &needs(1, 256)), Placement::Refused(Refusal::Full { largest_free_mb: 124 }));
        // The unhealthy worker has room but is never chosen; a fitting one is.
        assert_eq!(s.place(&fleet, &needs(1, 100)), Placement::Worker(WorkerId(1)));
    }
}

#[test]
fn worker_books() {
    let mut w = Worker::new(WorkerId(7), 1000, 2);
    w.add(&needs(2, 300)).unwrap();
    w.add(&needs(1, 300)).unwrap();
    w.add(&needs(2, 300)).unwrap();
    assert_eq!((w.used_memory_mb, w.sandboxes(), w.copies(f(2)), w.copies(f(1)), w.distinct_functions()), (900, 3, 2, 1, 2));
    assert_eq!(w.add(&needs(3, 101)), Err(NoRoom { worker: WorkerId(7), free_mb: 100, needs_mb: 101 }));
    w.add(&needs(3, 100)).unwrap();
    assert!(!w.fits(1));
    assert!(!w.remove(&needs(9, 100)), "no sandbox of that function");
    assert!(w.remove(&needs(1, 300)));
    assert_eq!((w.used_memory_mb, w.copies(f(1)), w.distinct_functions()), (700, 0, 2));
    assert!(!w.fits(u64::MAX), "no overflow");
}

#[test]
fn packing_fills_the_first_worker_within_target() {
    // 60% and 40% used; 10% more: the first (70% after) wins, though less full workers have more room.
    let fleet = [worker(0, 1000, &[(1, 600)]), worker(1, 1000, &[(2, 400)]), worker(2, 1000, &[])];
    assert_eq!(Packing::default().choose(&fleet, &needs(3, 100)), Placement::Worker(WorkerId(0)));
    // 350 more would take the first to 95%: the next one (75% after) wins.
    assert_eq!(Packing::default().choose(&fleet, &needs(3, 350)), Placement::Worker(WorkerId(1)));
    // Least-loaded takes the empty one either way.
    assert_eq!(LeastLoaded.place(&fleet, &needs(3, 100)), Placement::Worker(WorkerId(2)));
}

#[test]
fn packing_falls_back_to_most_headroom_above_target() {
    let fleet = [worker(0, 1000, &[(1, 850)]), worker(1, 1000, &[(2, 750)]), worker(2, 1000, &[(2, 900)])];
    // Nothing stays within 90% with 200 more: 95% after on worker 1 is the most headroom.
    assert_eq!(Packing::default().choose(&fleet, &needs(3, 200)), Placement::Worker(WorkerId(1)));
    // Only worker 1 fits 250; it goes to 100%, not refused.
    assert_eq!(Packing::default().choose(&fleet, &needs(3, 250)), Placement::Worker(WorkerId(1)));
    assert!(matches!(Packing::default().choose(&fleet, &needs(3, 251)), Placement::Refused(Refusal::Full { .. })));
    // Above target, near-equal is not enough: the most headroom wins even with more copies;
    // copies break exact ties only.
    let tight = [worker(0, 1000, &[(1, 900)]), worker(1, 1000, &[(1, 450), (1, 440)]), worker(2, 1000, &[(2, 900)])];
    assert_eq!(Packing::default().choose(&tight, &needs(1, 100)), Placement::Worker(WorkerId(1)));
    let tight = [worker(0, 1000, &[(1, 900)]), worker(1, 1000, &[(2, 900)])];
    assert_eq!(Packing::default().choose(&tight, &needs(1, 100)), Placement::Worker(WorkerId(1)));
}

#[test]
fn packing_spreads_copies_within_the_mixing_window() {
    // Worker 0 comes first but already runs two copies of function 1.
    let fleet = [worker(0, 10_000, &[(1, 1000), (1, 1000), (2, 2200)]), worker(1, 10_000, &[(3, 2000), (4, 2000)])];
    assert_eq!(Packing::default().choose(&fleet, &needs(1, 500)), Placement::Worker(WorkerId(1)));
    // An unlike function goes to the first.
    assert_eq!(Packing::default().choose(&fleet, &needs(5, 500)), Placement::Worker(WorkerId(0)));
    // Outside the window (here the first candidate only), order wins over mixing.
    let strict = Packing { mix_window: 1, ..Packing::default() };
    assert_eq!(strict.choose(&fleet, &needs(1, 500)), Placement::Worker(WorkerId(0)));
}

/// A fixed scenario: 8 hosts, 60 sandboxes of mixed sizes and functions.
/// Packing uses fewer distinct hosts than least-loaded and never more than
/// the target until forced.
#[test]
fn packing_uses_fewer_hosts_than_least_loaded() {
    let sizes = [128, 256, 512, 1024, 1769, 3008];
    let scenario: Vec<Needs> = (0..60u64).map(|i| needs(i % 7, sizes[(i * 5 % 6) as usize])).collect();
    let used = |s: &mut dyn Strategy| {
        let mut fleet: Vec<Worker> = (0..8).map(|i| Worker::new(WorkerId(i), 16_384, 8)).collect();
        for n in &scenario {
            let id = place_and_check(s, &fleet, n).worker().expect("room for all");
            fleet[id.0 as usize].add(n).unwrap();
        }
        fleet.iter().filter(|w| w.sandboxes() > 0).count()
    };
    let total: u64 = scenario.iter().map(|n| n.memory_mb).sum();
    let packing = used(&mut Packing::default());
    let least = used(&mut LeastLoaded);
    let rr = used(&mut RoundRobin::new());
    assert_eq!((least, rr), (8, 8));
    assert!(packing < least, "packing used {packing} hosts, least-loaded {least}");
    // Within one host of filling each to the target.
    let at_target = total.div_ceil(16_384 * 8 / 10) as usize;
    assert!(packing <= at_target + 1, "packing used {packing} hosts for {total} MB");
}

#[test]
fn round_robin_cycles_and_skips() {
    let mut fleet: Vec<Worker> = (0..3).map(|i| worker(i, 1000, &[])).collect();
    fleet[1].healthy = false;
    let mut rr = RoundRobin::new();
    let picks: Vec<_> = (0..4).map(|_| rr.place(&fleet, &needs(1, 10)).worker().unwrap().0).collect();
    assert_eq!(picks, [0, 2, 0, 2]);
}

/// Random fleets and operation sequences (place, end a sandbox, flip health),
/// every strategy: invariants after every decision, books agree, and a
/// repeated decision on the same state is the same.
#[test]
fn random_sequences_keep_the_invariants() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let sizes = [128, 256, 512, 1024, 1769, 3008];
    for _ in 0..150 {
        for which in 0..3 {
            let mut strategy = strategies().swap_remove(which);
            let n = 1 + rand(12) as u32;
            let mut fleet: Vec<Worker> =
                (0..n).map(|i| Worker::new(WorkerId(100 + i), [4096, 8192, 16_384][rand(3) as usize], 4)).collect();
            let mut live: Vec<(usize, Needs)> = Vec::new();
            for _ in 0..200 {
                match rand(10) {
                    0..=5 => {
                        let wanted = needs(rand(6), sizes[rand(6) as usize]);
                        // Determinism: a copy of the strategy (cursor included) decides the same.
                        let again = strategy.clone().place(&fleet, &wanted);
                        let decision = place_and_check(&mut strategy, &fleet, &wanted);
                        assert_eq!(decision, again);
                        if let Placement::Worker(id) = decision {
                            let i = fleet.iter().position(|w| w.id == id).unwrap();
                            fleet[i].add(&wanted).unwrap();
                            live.push((i, wanted));
                        }
                    }
                    6..=8 if !live.is_empty() => {
                        let (i, gone) = live.swap_remove(rand(live.len() as u64) as usize);
                        assert!(fleet[i].remove(&gone));
                    }
                    _ => {
                        let i = rand(u64::from(n)) as usize;
                        fleet[i].healthy = !fleet[i].healthy;
                    }
                }
                for (i, w) in fleet.iter().enumerate() {
                    assert!(w.used_memory_mb <= w.memory_mb);
                    let mine: Vec<&Needs> = live.iter().filter(|(j, _)| *j == i).map(|(_, n)| n).collect();
                    assert_eq!(w.used_memory_mb, mine.iter().map(|n| n.memory_mb).sum::<u64>());
                    assert_eq!(w.sandboxes() as usize, mine.len());
                    for k in 0..6 {
                        assert_eq!(w.copies(f(k)) as usize, mine.iter().filter(|n| n.function == f(k)).count());
                    }
                }
            }
        }
    }
}

#[test]
fn round_robin_is_deterministic_given_its_cursor() {
    let fleet: Vec<Worker> = (0..5).map(|i| worker(i, 1000, &[(1, 200 * u64::from(i))])).collect();
    for start in 0..5 {
        for mb in [100, 700, 900] {
            let a = RoundRobin { next: start }.place(&fleet, &needs(1, mb));
            let b = RoundRobin { next: start }.place(&fleet, &needs(1, mb));
            assert_eq!(a, b);
        }
    }
}

/// Decisions do not depend on anything but their inputs: the same random
/// fleet decided twice, in fresh strategies, gives the same worker.
#[test]
fn decisions_are_deterministic() {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..500 {
        let fleet: Vec<Worker> = (0..1 + rand(20) as u32)
            .map(|i| {
                let placed: Vec<(u64, u64)> = (0..rand(10)).map(|_| (rand(4), 128 * (1 + rand(8)))).collect();
                let mut w = worker(i, 16_384, &placed);
                w.healthy = rand(8) != 0;
                w
            })
            .collect();
        let n = needs(rand(4), 128 * (1 + rand(24)));
        for (a, b) in strategies().iter_mut().zip(strategies().iter_mut()) {
            let first = place_and_check(a, &fleet, &n);
            assert_eq!(first, b.place(&fleet, &n), "{}", a.name());
        }
    }
}

// ---- eviction ----------------------------------------------------------------

fn idle(sandbox: u32, worker: u32, memory_mb: u64) -> Evictable<u32> {
    Evictable { sandbox, worker: WorkerId(worker), memory_mb }
}

/// `evict` against a plain model: the shortest prefix of the LRU order after
/// which some healthy worker fits, and that prefix's sandboxes on that worker.
fn evict_model(workers: &[Worker], needs: &Needs, lru: &[Evictable<u32>]) -> Option<Eviction<u32>> {
    if let Some(w) = workers.iter().find(|w| w.healthy && w.fits(needs.memory_mb)) {
        return Some(Eviction { worker: w.id, victims: vec![] });
    }
    for k in 1..=lru.len() {
        for w in workers.iter().filter(|w| w.healthy) {
            let on_w: Vec<&Evictable<u32>> = lru[..k].iter().filter(|e| e.worker == w.id).collect();
            let freed: u64 = on_w.iter().map(|e| e.memory_mb).sum();
            if w.used_memory_mb - freed + needs.memory_mb <= w.memory_mb {
                return Some(Eviction { worker: w.id, victims: on_w.iter().map(|e| e.sandbox).collect() });
            }
        }
    }
    None
}

#[test]
fn eviction_table() {
    let full = |id, mbs: &[u64]| worker(id, 512, &mbs.iter().map(|&mb| (u64::from(id), mb)).collect::<Vec<_>>());
    // One full worker of four idle 128 MB sandboxes: the least recently used one goes.
    let one = [full(0, &[128, 128, 128, 128])];
    let lru = [idle(3, 0, 128), idle(1, 0, 128), idle(2, 0, 128), idle(4, 0, 128)];
    assert_eq!(evict(&one, &needs(9, 128), &lru), Some(Eviction { worker: WorkerId(0), victims: vec![3] }));
    // 256 MB needs the two least recently used.
    assert_eq!(evict(&one, &needs(9, 256), &lru), Some(Eviction { worker: WorkerId(0), victims: vec![3, 1] }));
    // Busy sandboxes are not listed: two idle of 128 cannot make 384.
    assert_eq!(evict(&one, &needs(9, 384), &lru[..2]), None);
    assert_eq!(evict(&one, &needs(9, 512), &lru), Some(Eviction { worker: WorkerId(0), victims: vec![3, 1, 2, 4] }));
    // Larger than the worker: nothing to evict for it.
    assert_eq!(evict(&one, &needs(9, 513), &lru), None);
    // Nothing idle: nothing to do.
    assert_eq!(evict::<u32>(&one, &needs(9, 128), &[]), None);
    // Room already: no victims.
    let roomy = [full(0, &[128, 128, 128])];
    assert_eq!(evict(&roomy, &needs(9, 128), &lru[..3]), Some(Eviction { worker: WorkerId(0), victims: vec![] }));
    // Two workers: the walk stops on the first worker that fits; the other keeps its idle ones.
    let two = [full(0, &[256, 256]), full(1, &[128, 128, 128, 128])];
    let lru = [idle(10, 1, 128), idle(20, 0, 256), idle(11, 1, 128)];
    assert_eq!(evict(&two, &needs(9, 256), &lru), Some(Eviction { worker: WorkerId(0), victims: vec![20] }));
    assert_eq!(evict(&two, &needs(9, 128), &lru), Some(Eviction { worker: WorkerId(1), victims: vec![10] }));
    // An unhealthy worker's idle sandboxes are never chosen, and it never takes the new one.
    let mut sick = two.clone();
    sick[0].healthy = false;
    assert_eq!(evict(&sick, &needs(9, 256), &lru), Some(Eviction { worker: WorkerId(1), victims: vec![10, 11] }));
    // Unknown workers are skipped.
    assert_eq!(evict(&one, &needs(9, 128), &[idle(5, 7, 128), idle(3, 0, 128)]), Some(Eviction { worker: WorkerId(0), victims: vec![3] }));
}

/// Every fleet of two workers (4 units each, healthy or not, some memory
/// busy) with every LRU list of up to four idle sandboxes (1 or 2 units, on
/// either worker) and every need of 1–5 units: `evict` answers as the model,
/// never picks an unhealthy worker, and after its victims end the new sandbox
/// fits.
#[test]
fn eviction_matches_the_model_exhaustively() {
    let unit = 128;
    let mut cases = 0;
    for len in 0..=4u32 {
        for code in 0..4u32.pow(len) {
            let lru: Vec<Evictable<u32>> = (0..len)
                .map(|i| {
                    let c = code / 4u32.pow(i) % 4;
                    idle(i, c % 2, (u64::from(c / 2) + 1) * unit)
                })
                .collect();
            let idle_on = |w: u32| lru.iter().filter(|e| e.worker == WorkerId(w)).map(|e| e.memory_mb).sum::<u64>();
            for fleet in 0..(5u32 * 5 * 4) {
                let busy = [u64::from(fleet % 5), u64::from(fleet / 5 % 5)];
                let healthy = [fleet / 25 % 2 == 0, fleet / 50 % 2 == 0];
                if (0..2).any(|w| idle_on(w as u32) + busy[w] * unit > 4 * unit) {
                    continue;
                }
                let workers: Vec<Worker> = (0..2u32)
                    .map(|w| {
                        let mut placed: Vec<(u64, u64)> =
                            lru.iter().filter(|e| e.worker == WorkerId(w)).map(|e| (1, e.memory_mb)).collect();
                        placed.extend(std::iter::repeat_n((2, unit), busy[w as usize] as usize));
                        let mut record = worker(w, 4 * unit, &placed);
                        record.healthy = healthy[w as usize];
                        record
                    })
                    .collect();
                for units in 1..=5 {
                    let n = needs(3, units * unit);
                    let got = evict(&workers, &n, &lru);
                    assert_eq!(got, evict_model(&workers, &n, &lru), "{workers:?} {n:?} {lru:?}");
                    if let Some(Eviction { worker, victims }) = &got {
                        let w = by_id(&workers, *worker);
                        assert!(w.healthy);
                        let freed: u64 = lru.iter().filter(|e| victims.contains(&e.sandbox)).map(|e| e.memory_mb).sum();
                        assert!(lru.iter().filter(|e| victims.contains(&e.sandbox)).all(|e| e.worker == *worker));
                        assert!(w.used_memory_mb - freed + n.memory_mb <= w.memory_mb);
                    } else {
                        assert!(refusal(&workers, &n).is_some());
                    }
                    cases += 1;
                }
            }
        }
    }
    assert!(cases > 10_000, "{cases}");
}
