//! Which stripes a node's tier keeps: least-recently-used under a byte budget. Pure.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission<K> {
    Admitted { evicted: Vec<K> },
    Present,
    TooLarge,
}

#[derive(Debug)]
pub(crate) struct LruK<K> {
    capacity: u64,
    used: u64,
    clock: u64,
    entries: HashMap<K, (u64, u64)>,
    order: BTreeMap<u64, K>,
}

impl<K: Clone + Eq + Hash> LruK<K> {
    pub(crate) fn new(capacity: u64) -> Self {
        Self { capacity, used: 0, clock: 0, entries: HashMap::new(), order: BTreeMap::new() }
    }

    pub(crate) fn used(&self) -> u64 {
        self.used
    }

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

    pub(crate) fn admit(&mut self, key: K, size: u64) -> Admission<K> {
        if self.touch(&key) {
            return Admission::Present;
        }
        if size > self.capacity {
            return Admission::TooLarge;
        }
        let mut evicted = Vec::new();
        while self.used + size > self.capacity {
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

    pub(crate) fn remove(&mut self, key: &K) -> bool {
        let Some((len, last)) = self.entries.remove(key) else { return false };
        self.order.remove(&last);
        self.used -= len;
        true
    }
}
