use proptest::prelude::*;

use super::{Admission, Eviction, Fifo, Lru, LruK, MAX_K, Policy, Queue, Rank};

/// What the tests read of a policy beyond the trait.
trait Inspect: Eviction<u32> {
    /// The resident keys, next victim first.
    fn victims_first(&self) -> Vec<u32>;
    /// How many keys the policy holds anything for.
    fn known(&self) -> usize {
        self.len()
    }
}

impl<const REQUEUE: bool> Inspect for Queue<u32, REQUEUE> {
    fn victims_first(&self) -> Vec<u32> {
        self.resident.victims_first()
    }
}

impl Inspect for LruK<u32> {
    fn victims_first(&self) -> Vec<u32> {
        self.resident.victims_first()
    }

    fn known(&self) -> usize {
        self.history.len()
    }
}

fn subject(policy: Policy, capacity: u64, min_retained: usize) -> Box<dyn Inspect> {
    match policy {
        Policy::LruK(k) => Box::new(LruK::new(capacity, k).retaining(min_retained)),
        Policy::Lru => Box::new(Lru::new(capacity)),
        Policy::Fifo => Box::new(Fifo::new(capacity)),
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Touch(u32),
    Admit(u32, u64),
    Remove(u32),
}

fn yes_no(yes: bool) -> String {
    if yes { "y" } else { "n" }.into()
}

/// An admission, written as in [`check`].
fn show(admission: Admission<u32>) -> String {
    match admission {
        Admission::Admitted { evicted } => {
            format!("+{}", evicted.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
        }
        Admission::Present => "=".into(),
        Admission::TooLarge => "!".into(),
    }
}

/// `op`'s answer, written as in [`check`].
fn apply(policy: &mut dyn Eviction<u32>, op: Op) -> String {
    match op {
        Op::Touch(key) => yes_no(policy.touch(&key)),
        Op::Remove(key) => yes_no(policy.remove(&key)),
        Op::Admit(key, bytes) => show(policy.admit(key, bytes)),
    }
}

/// Runs `ops` (`a KEY SIZE` admits, `t KEY` touches, `r KEY` removes; keys are numbers) on `policy` of
/// `capacity` bytes; checks each answer (`+` admitted evicting nothing, `+1,2` admitted evicting 1 then 2, `=`
/// present, `!` too large, `y`/`n` for touch and remove) and the keys left, next victim first.
fn check(policy: Policy, capacity: u64, ops: &str, answers: &str, left: &str) {
    let mut subject = subject(policy, capacity, LruK::<u32>::DEFAULT_MIN_RETAINED);
    let mut got = Vec::new();
    for op in ops.split(';').map(str::trim).filter(|op| !op.is_empty()) {
        let parts: Vec<&str> = op.split(' ').collect();
        let op = match parts[..] {
            ["a", key, size] => Op::Admit(key.parse().unwrap(), size.parse().unwrap()),
            ["t", key] => Op::Touch(key.parse().unwrap()),
            ["r", key] => Op::Remove(key.parse().unwrap()),
            _ => panic!("bad op {op}"),
        };
        got.push(apply(subject.as_mut(), op));
        assert!(subject.used() <= subject.capacity(), "{policy} {ops}: over budget after {op:?}");
    }
    assert_eq!(got.join(" "), answers, "{policy} {ops}");
    let left_now: Vec<String> = subject.victims_first().iter().map(u32::to_string).collect();
    assert_eq!(left_now.join(" "), left, "{policy} {ops}");
}

#[test]
fn every_policy_admits_until_full_then_evicts() {
    for policy in [Policy::LruK(2), Policy::Lru, Policy::Fifo] {
        check(policy, 10, "a 1 4; a 2 4", "+ +", "1 2");
        check(policy, 10, "a 1 4; a 2 4; a 3 4", "+ + +1", "2 3");
        // One admission may evict several.
        check(policy, 10, "a 1 3; a 2 3; a 3 3; a 4 9", "+ + + +1,2,3", "4");
        // Exactly full is within budget.
        check(policy, 10, "a 1 5; a 2 5", "+ +", "1 2");
        check(policy, 10, "a 1 4; a 99 11; a 2 4", "+ ! +", "1 2");
        check(policy, 0, "a 1 1; a 2 0", "! +", "2");
        check(policy, 10, "a 1 6; r 1; r 1; a 2 6; a 3 4", "+ y n + +", "2 3");
        check(policy, 10, "t 1; a 1 4; t 1; t 2; r 2", "n + y n n", "1");
        // Admitting a resident entry is a touch; its size stays.
        let twice_first = if let Policy::LruK(_) = policy { "2 1" } else { "1 2" };
        check(policy, 10, "a 1 4; a 1 9; a 2 6", "+ = +", twice_first);
    }
}

#[test]
fn lru_and_fifo_differ_in_what_a_hit_does() {
    check(Policy::Lru, 10, "a 1 4; a 2 4; t 1; a 3 4", "+ + y +2", "1 3");
    check(Policy::Fifo, 10, "a 1 4; a 2 4; t 1; a 3 4", "+ + y +1", "2 3");
}

#[test]
fn lru_k_evicts_entries_with_fewer_than_k_references_first() {
    // 1 was referenced twice: 2, then 3 (once each) go before it, the least recently used first.
    check(Policy::LruK(2), 8, "a 1 4; t 1; a 2 4; a 3 4", "+ y + +2", "3 1");
    check(Policy::LruK(2), 12, "a 1 4; t 1; a 2 4; a 3 4; t 2; a 4 4", "+ y + + y +3", "4 1 2");
    // Among entries referenced K times, the oldest K-th reference goes first, not the least recently used.
    check(Policy::LruK(2), 8, "a 1 4; a 2 4; t 2; t 1; a 3 4", "+ + y y +1", "3 2");
    // K = 3: two references are not enough.
    check(Policy::LruK(3), 8, "a 1 4; t 1; a 2 4; t 2; t 2; a 3 4", "+ y + y y +1", "3 2");
}

#[test]
fn lru_k_remembers_the_references_of_keys_that_left() {
    // 1 is evicted, comes back and so has two references: 2 and 3, read once, go before it.
    check(Policy::LruK(2), 8, "a 1 4; a 2 4; a 3 4; a 1 4; a 4 4", "+ + +1 +2 +3", "4 1");
    // Removed entries are remembered too.
    check(Policy::LruK(2), 8, "a 1 4; r 1; a 2 4; a 1 4; a 3 4", "+ y + + +2", "3 1");
    // Room for two: 1 comes back after four others. Remembered, it has two references and 7 goes before it;
    // forgotten (at most max(2, 0) keys retained), it is new again and, as with LRU, goes first.
    let mut remembering = LruK::new(8, 2);
    let mut forgetful = LruK::new(8, 2).retaining(0);
    let mut plain = Lru::new(8);
    for (policy, victim) in [(&mut remembering as &mut dyn Eviction<u32>, 7), (&mut forgetful, 1), (&mut plain, 1)] {
        for key in [1, 2, 3, 4, 5, 1, 7] {
            policy.admit(key, 4);
        }
        assert_eq!(policy.admit(8, 4), Admission::Admitted { evicted: vec![victim] });
    }
    assert!(forgetful.known() <= 4, "{}", forgetful.known());
}

#[test]
fn k_is_kept_within_its_range() {
    assert_eq!(LruK::<u32>::new(10, 0).k(), 1);
    assert_eq!(LruK::<u32>::new(10, 1000).k(), MAX_K);
    assert_eq!(LruK::<u32>::lru2(10).k(), 2);
}

#[test]
fn policies_have_names() {
    for (name, policy) in [("lru-2", Policy::LruK(2)), ("lru-1", Policy::LruK(1)), ("lru-64", Policy::LruK(64))]
        .into_iter()
        .chain([("lru", Policy::Lru), ("fifo", Policy::Fifo)])
    {
        assert_eq!(name.parse::<Policy>(), Ok(policy), "{name}");
        assert_eq!(policy.to_string(), name);
    }
    for bad in ["", "LRU", "lru-0", "lru-65", "lru-", "lru-+2", "lru- 2", "lru-2x", "lru-99999999999999999999", "lfu"] {
        let err = bad.parse::<Policy>().unwrap_err();
        assert!(err.to_string().contains("expected lru-K"), "{bad}: {err}");
    }
    assert_eq!(Policy::default(), Policy::LruK(2));
    let mut built = Policy::Fifo.build::<u32>(5);
    let admitted = built.admit(1, 5);
    assert_eq!(admitted, Admission::Admitted { evicted: vec![] });
    assert_eq!((built.capacity(), built.used(), built.len()), (5, 5, 1));
}

/// Hits of the last pass over a hot set, after the hot set was read `rounds` times and then a scan read `scan`
/// other keys once each (every entry 1 byte, room for `capacity`).
fn hot_hits_after_scan(policy: Policy, capacity: u64, hot: u32, scan: u32) -> usize {
    let mut cache = policy.build::<u32>(capacity);
    let mut read = |key: u32| {
        cache.touch(&key) || {
            cache.admit(key, 1);
            false
        }
    };
    for _ in 0..3 {
        for key in 0..hot {
            read(key);
        }
    }
    for key in 1000..1000 + scan {
        read(key);
    }
    (0..hot).filter(|&key| read(key)).count()
}

#[test]
fn lru_2_keeps_a_hot_set_through_a_scan_that_lru_loses() {
    assert_eq!(hot_hits_after_scan(Policy::LruK(2), 10, 8, 100), 8);
    assert_eq!(hot_hits_after_scan(Policy::Lru, 10, 8, 100), 0);
    assert_eq!(hot_hits_after_scan(Policy::Fifo, 10, 8, 100), 0);
}

/// The reference model: vectors, linear scans, every reference kept.
struct Model {
    policy: Policy,
    capacity: u64,
    min_retained: usize,
    clock: u64,
    /// (key, size, admitted at, references) of each resident entry.
    resident: Vec<(u32, u64, u64, Vec<u64>)>,
    /// (key, references) of each key that left and whose references LRU-K still counts.
    retained: Vec<(u32, Vec<u64>)>,
}

impl Model {
    fn new(policy: Policy, capacity: u64, min_retained: usize) -> Self {
        Model { policy, capacity, min_retained, clock: 0, resident: Vec::new(), retained: Vec::new() }
    }

    /// The victim is the lowest.
    fn rank(&self, admitted: u64, refs: &[u64]) -> Rank {
        let last = *refs.last().unwrap();
        match self.policy {
            Policy::Fifo => (0, admitted),
            Policy::Lru => (0, last),
            Policy::LruK(k) if refs.len() >= k => (1, refs[refs.len() - k]),
            Policy::LruK(_) => (0, last),
        }
    }

    fn used(&self) -> u64 {
        self.resident.iter().map(|e| e.1).sum()
    }

    fn victims_first(&self) -> Vec<u32> {
        let mut ranked: Vec<(Rank, u32)> = self.resident.iter().map(|e| (self.rank(e.2, &e.3), e.0)).collect();
        ranked.sort();
        ranked.into_iter().map(|(_, key)| key).collect()
    }

    fn touch(&mut self, key: u32) -> bool {
        self.clock += 1;
        let Some(entry) = self.resident.iter_mut().find(|e| e.0 == key) else { return false };
        entry.3.push(self.clock);
        true
    }

    fn admit(&mut self, key: u32, bytes: u64) -> Admission<u32> {
        if self.touch(key) {
            return Admission::Present;
        }
        if bytes > self.capacity {
            return Admission::TooLarge;
        }
        self.clock += 1;
        let mut refs = match self.retained.iter().position(|e| e.0 == key) {
            Some(i) => self.retained.remove(i).1,
            None => Vec::new(),
        };
        refs.push(self.clock);
        let mut evicted = Vec::new();
        while self.used() + bytes > self.capacity {
            let victim = self.victims_first()[0];
            evicted.push(victim);
            self.leave(victim);
        }
        self.resident.push((key, bytes, self.clock, refs));
        self.trim();
        Admission::Admitted { evicted }
    }

    fn remove(&mut self, key: u32) -> bool {
        if !self.resident.iter().any(|e| e.0 == key) {
            return false;
        }
        self.leave(key);
        self.trim();
        true
    }

    fn leave(&mut self, key: u32) {
        let i = self.resident.iter().position(|e| e.0 == key).unwrap();
        let (key, _, _, refs) = self.resident.remove(i);
        if let Policy::LruK(_) = self.policy {
            self.retained.push((key, refs));
        }
    }

    fn trim(&mut self) {
        while self.retained.len() > self.resident.len().max(self.min_retained) {
            let oldest = (0..self.retained.len()).min_by_key(|&i| self.retained[i].1.last().copied()).unwrap();
            self.retained.remove(oldest);
        }
    }

    fn apply(&mut self, op: Op) -> String {
        match op {
            Op::Touch(key) => yes_no(self.touch(key)),
            Op::Remove(key) => yes_no(self.remove(key)),
            Op::Admit(key, bytes) => show(self.admit(key, bytes)),
        }
    }
}

fn against_model(policy: Policy, capacity: u64, min_retained: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut subject = subject(policy, capacity, min_retained);
    let mut model = Model::new(policy, capacity, min_retained);
    for (step, &op) in ops.iter().enumerate() {
        prop_assert_eq!(apply(subject.as_mut(), op), model.apply(op), "step {} {:?}", step, op);
        prop_assert!(subject.used() <= subject.capacity());
        prop_assert_eq!(subject.used(), model.used(), "used after step {}", step);
        prop_assert_eq!(subject.len(), model.resident.len());
        prop_assert_eq!(subject.victims_first(), model.victims_first(), "order after step {}", step);
        let len = subject.len();
        let known = subject.known();
        prop_assert!(known <= len + len.max(min_retained), "{} keys known, {} resident", known, len);
    }
    Ok(())
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (0..16u32, 0..=12u64).prop_map(|(key, bytes)| Op::Admit(key, bytes)),
        3 => (0..16u32).prop_map(Op::Touch),
        1 => (0..16u32).prop_map(Op::Remove),
    ];
    prop::collection::vec(op, 0..300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn lru_k_answers_as_the_model(k in 1usize..=3, capacity in 0u64..40, min in 0usize..5, ops in ops()) {
        against_model(Policy::LruK(k), capacity, min, &ops)?;
    }

    #[test]
    fn lru_answers_as_the_model(capacity in 0u64..40, ops in ops()) {
        against_model(Policy::Lru, capacity, 0, &ops)?;
    }

    #[test]
    fn fifo_answers_as_the_model(capacity in 0u64..40, ops in ops()) {
        against_model(Policy::Fifo, capacity, 0, &ops)?;
    }

    /// LRU-1 is LRU: the same answers whatever it remembers.
    #[test]
    fn lru_1_is_lru(capacity in 0u64..40, ops in ops()) {
        let (mut lru1, mut lru) = (LruK::new(capacity, 1), Lru::new(capacity));
        for op in ops {
            prop_assert_eq!(apply(&mut lru1, op), apply(&mut lru, op));
        }
    }
}
