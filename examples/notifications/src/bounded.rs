//! A map with a fixed capacity that forgets its oldest entries first.
//!
//! Both services remember things per notification (its status, the provider's idempotency
//! keys); this keeps that memory bounded whatever the traffic.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map holding at most `entries_max` entries; inserting a new key into a full map evicts the
/// key inserted longest ago.
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    entries: HashMap<K, V>,
    /// Keys in insertion order, oldest first; exactly the keys of `entries`.
    order: VecDeque<K>,
    entries_max: usize,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    /// A map keeping at most `entries_max` entries (at least one).
    pub fn new(entries_max: usize) -> Self {
        BoundedMap {
            entries: HashMap::new(),
            order: VecDeque::new(),
            entries_max: entries_max.max(1),
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Inserts or replaces `key`'s value; a new key may evict the oldest one.
    pub fn insert(&mut self, key: K, value: V) {
        if let Some(v) = self.entries.get_mut(&key) {
            *v = value;
            return;
        }
        while self.entries.len() >= self.entries_max {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(key.clone());
        self.entries.insert(key, value);
    }

    /// Removes `key`; O(n) in the number of entries, for the rare removal.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let value = self.entries.remove(key)?;
        if let Some(i) = self.order.iter().position(|k| k == key) {
            self.order.remove(i);
        }
        Some(value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys, oldest first.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.order.iter()
    }

    pub fn entries_max(&self) -> usize {
        self.entries_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_forgets_the_oldest_key() {
        let mut m = BoundedMap::new(2);
        m.insert("a", 1);
        m.insert("b", 2);
        m.insert("a", 10);
        assert_eq!(m.len(), 2);
        m.insert("c", 3);
        assert_eq!(m.len(), 2);
        assert!(!m.contains_key(&"a"));
        assert_eq!(m.get(&"b"), Some(&2));
        assert_eq!(m.get(&"c"), Some(&3));
    }

    #[test]
    fn removed_keys_free_their_place() {
        let mut m = BoundedMap::new(2);
        m.insert(1, ());
        m.insert(2, ());
        assert_eq!(m.remove(&1), Some(()));
        m.insert(3, ());
        assert!(m.contains_key(&2) && m.contains_key(&3));
        assert_eq!(m.order.len(), 2);
    }
}
