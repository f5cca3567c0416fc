//! Which cached chunks stay: least-recently-used eviction under a byte budget. Pure: no IO, no clock (uses are
//! ordered by a counter).
//!
//! The index holds each entry's size; [`Lru::admit`] answers what to evict so that a new entry fits, and the
//! caller (the cache) removes those files. Invariant: `used() <= capacity()` after every call, and `used()` is the
//! sum of the sizes of the entries held.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// What [`Lru::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission<K> {
    /// The entry is in; these entries (least recently used first) were evicted to make room.
    Admitted { evicted: Vec<K> },
    /// The entry was already held (now the most recently used); nothing changed otherwise.
    Present,
    /// The entry is larger than the whole budget: not admitted, nothing evicted.
    TooLarge,
}

/// A least-recently-used index of sized entries, bounded by `capacity` bytes.
#[derive(Debug)]
pub(crate) struct Lru<K> {
    capacity: u64,
    used: u64,
    clock: u64,
    /// Entry → (size, last use).
    entries: HashMap<K, (u64, u64)>,
    /// Last use → entry: the first is the least recently used.
    order: BTreeMap<u64, K>,
}

impl<K: Clone + Eq + Hash> Lru<K> {
    pub(crate) fn new(capacity: u64) -> Self {
        Self { capacity, used: 0, clock: 0, entries: HashMap::new(), order: BTreeMap::new() }
    }

    /// The bytes the entries held take.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether `key` is held; if so, it is now the most recently used.
    pub(crate) fn touch(&mut self, key: &K) -> bool {
        let Some((_, last)) = self.entries.get(key).copied() else { return false };
        self.clock += 1;
        self.order.remove(&last);
        self.order.insert(self.clock, key.clone());
        if let Some(entry) = self.entries.get_mut(key) {
            entry.1 = self.clock;
        }
        true
    }

    /// Adds `key` of `size` bytes as the most recently used, evicting the least recently used entries until it
    /// fits.
    pub(crate) fn admit(&mut self, key: K, size: u64) -> Admission<K> {
        if self.touch(&key) {
            return Admission::Present;
        }
        if size > self.capacity {
            return Admission::TooLarge;
        }
        let mut evicted = Vec::new();
        while self.used + size > self.capacity {
            // `used > 0` here (size <= capacity), so some entry is held.
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some((len, _)) = self.entries.remove(&oldest) {
                self.used -= len;
            }
            evicted.push(oldest);
        }
        self.clock += 1;
        self.order.insert(self.clock, key.clone());
        self.entries.insert(key, (size, self.clock));
        self.used += size;
        Admission::Admitted { evicted }
    }

    /// Drops `key` (its file could not be kept); whether it was held.
    pub(crate) fn remove(&mut self, key: &K) -> bool {
        let Some((len, last)) = self.entries.remove(key) else { return false };
        self.order.remove(&last);
        self.used -= len;
        true
    }

    #[cfg(test)]
    pub(crate) fn keys_oldest_first(&self) -> Vec<K> {
        self.order.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{Admission, Lru};

    /// Runs `ops` (`a KEY SIZE` admits, `t KEY` touches, `r KEY` removes) on an index of `capacity` bytes; checks
    /// each answer (`+` admitted evicting nothing, `+k,j` admitted evicting k then j, `=` present, `!` too large,
    /// `y`/`n` for touch and remove), the keys left oldest first, and the invariants after every step.
    fn check(capacity: u64, ops: &str, answers: &str, left: &str) {
        let mut lru = Lru::new(capacity);
        let mut got = Vec::new();
        for op in ops.split(';').map(str::trim).filter(|op| !op.is_empty()) {
            let parts: Vec<&str> = op.split(' ').collect();
            let answer = match parts[..] {
                ["a", key, size] => match lru.admit(key.to_string(), size.parse().unwrap()) {
                    Admission::Admitted { evicted } => format!("+{}", evicted.join(",")),
                    Admission::Present => "=".into(),
                    Admission::TooLarge => "!".into(),
                },
                ["t", key] => if lru.touch(&key.to_string()) { "y" } else { "n" }.into(),
                ["r", key] => if lru.remove(&key.to_string()) { "y" } else { "n" }.into(),
                _ => panic!("bad op {op}"),
            };
            got.push(answer);
            assert!(lru.used() <= lru.capacity(), "{ops}: over budget after {op}");
            let sum: u64 = lru.entries.values().map(|(len, _)| len).sum();
            assert_eq!(lru.used(), sum, "{ops}: used after {op}");
            assert_eq!(lru.entries.len(), lru.order.len(), "{ops}: index and order after {op}");
        }
        assert_eq!(got.join(" "), answers, "{ops}");
        assert_eq!(lru.keys_oldest_first().join(" "), left, "{ops}");
    }

    #[test]
    fn admits_until_full_then_evicts_the_least_recently_used() {
        check(10, "a x 4; a y 4", "+ +", "x y");
        check(10, "a x 4; a y 4; a z 4", "+ + +x", "y z");
        // One admission may evict several.
        check(10, "a x 3; a y 3; a z 3; a w 9", "+ + + +x,y,z", "w");
        // Exactly full is within budget.
        check(10, "a x 5; a y 5", "+ +", "x y");
    }

    #[test]
    fn a_touch_makes_an_entry_the_most_recent() {
        check(10, "a x 4; a y 4; t x; a z 4", "+ + y +y", "x z");
        check(10, "t x; a x 4; t x; t y", "n + y n", "x");
        // Admitting a held entry is a touch.
        check(10, "a x 4; a y 4; a x 4; a z 4", "+ + = +y", "x z");
    }

    #[test]
    fn what_is_larger_than_the_budget_is_not_admitted() {
        check(10, "a x 4; a big 11; a y 4", "+ ! +", "x y");
        check(0, "a x 1; a empty 0", "! +", "empty");
    }

    #[test]
    fn removing_frees_room() {
        check(10, "a x 6; r x; r x; a y 6; a z 4", "+ y n + +", "y z");
        check(10, "a x 6; a y 4; r x; a z 6", "+ + y +", "y z");
    }
}
