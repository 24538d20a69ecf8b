//! Bounded bookkeeping a member keeps per stream: the duplicate window of event ids (direct) and
//! per-publisher gap counting (datagram).

use std::collections::{HashMap, HashSet, VecDeque};

/// Remembers the last `dedup_window_events` handled event ids so a retry after a lost ack is
/// acknowledged without running the handler a second time.
#[derive(Debug)]
pub struct DedupWindow {
    dedup_window_events: usize,
    order: VecDeque<u128>,
    seen: HashSet<u128>,
}

impl DedupWindow {
    pub fn new(dedup_window_events: usize) -> Self {
        DedupWindow {
            dedup_window_events,
            order: VecDeque::with_capacity(dedup_window_events.min(1 << 16)),
            seen: HashSet::with_capacity(dedup_window_events.min(1 << 16)),
        }
    }

    pub fn contains(&self, id: u128) -> bool {
        self.seen.contains(&id)
    }

    /// Records a handled id, forgetting the oldest when the window is full.
    pub fn insert(&mut self, id: u128) {
        if self.dedup_window_events == 0 || !self.seen.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.dedup_window_events {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }
}

/// Sequence numbers remembered per publisher to tell a late (reordered) datagram from a duplicate.
pub const REORDER_WINDOW_SEQS: u64 = 4096;

/// Counts received and lost datagrams of one publisher.
///
/// Loss is `highest - lowest + 1 - distinct received`, so a datagram that arrives late (within
/// [`REORDER_WINDOW_SEQS`]) is not counted as lost, and a duplicate is not counted as received.
#[derive(Debug, Clone, Default)]
pub struct PublisherGaps {
    lowest: u64,
    highest: u64,
    received: u64,
    duplicates: u64,
    /// Bitmap of the last `REORDER_WINDOW_SEQS` sequence numbers at or below `highest`.
    recent: Vec<u64>,
}

impl PublisherGaps {
    fn bit(&self, seq: u64) -> (usize, u64) {
        let slot = (seq % REORDER_WINDOW_SEQS) as usize;
        (slot / 64, 1u64 << (slot % 64))
    }

    /// Records a datagram; returns false if it was a duplicate.
    pub fn record(&mut self, seq: u64) -> bool {
        if self.recent.is_empty() {
            self.recent = vec![0; (REORDER_WINDOW_SEQS / 64) as usize];
            self.lowest = seq;
            self.highest = seq;
        } else if seq > self.highest {
            // Clear the slots the window slides over so they can be reused for new numbers.
            let clear_from = self.highest + 1;
            let clear_to = seq.min(self.highest + REORDER_WINDOW_SEQS);
            for s in clear_from..=clear_to {
                let (w, b) = self.bit(s);
                self.recent[w] &= !b;
            }
            if seq - self.highest > REORDER_WINDOW_SEQS {
                self.recent.iter_mut().for_each(|w| *w = 0);
            }
            self.highest = seq;
        } else if seq + REORDER_WINDOW_SEQS <= self.highest {
            // Too old to tell from a duplicate; count it as received, it did arrive.
            self.lowest = self.lowest.min(seq);
            self.received += 1;
            return true;
        } else if seq < self.lowest {
            self.lowest = seq;
        }
        let (w, b) = self.bit(seq);
        if self.recent[w] & b != 0 {
            self.duplicates += 1;
            return false;
        }
        self.recent[w] |= b;
        self.received += 1;
        true
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn lost(&self) -> u64 {
        if self.received == 0 {
            return 0;
        }
        // Not an invariant: a duplicate too old to tell apart is counted as received (see
        // `record`), so `received` can exceed the span.
        (self.highest - self.lowest + 1).saturating_sub(self.received)
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

/// Gap counters for every publisher a member has heard from, bounded by `publishers_max`.
#[derive(Debug)]
pub struct GapCounter {
    publishers_max: usize,
    by_publisher: HashMap<u128, PublisherGaps>,
    /// Counts of publishers forgotten to stay within the bound, so totals never go backwards.
    retired_received: u64,
    retired_lost: u64,
}

impl GapCounter {
    pub fn new(publishers_max: usize) -> Self {
        GapCounter {
            publishers_max: publishers_max.max(1),
            by_publisher: HashMap::new(),
            retired_received: 0,
            retired_lost: 0,
        }
    }

    pub fn record(&mut self, publisher: u128, seq: u64) -> bool {
        if !self.by_publisher.contains_key(&publisher)
            && self.by_publisher.len() >= self.publishers_max
        {
            // Forget an arbitrary publisher but keep its counts in the totals.
            if let Some(victim) = self.by_publisher.keys().next().copied()
                && let Some(gaps) = self.by_publisher.remove(&victim)
            {
                self.retired_received += gaps.received();
                self.retired_lost += gaps.lost();
            }
        }
        self.by_publisher.entry(publisher).or_default().record(seq)
    }

    pub fn received(&self) -> u64 {
        self.retired_received
            + self
                .by_publisher
                .values()
                .map(|g| g.received())
                .sum::<u64>()
    }

    pub fn lost(&self) -> u64 {
        self.retired_lost + self.by_publisher.values().map(|g| g.lost()).sum::<u64>()
    }

    pub fn publisher(&self, publisher: u128) -> Option<&PublisherGaps> {
        self.by_publisher.get(&publisher)
    }

    /// Every tracked publisher with its counters.
    pub fn publishers(&self) -> impl Iterator<Item = (u128, &PublisherGaps)> {
        self.by_publisher.iter().map(|(id, gaps)| (*id, gaps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dedup_window_forgets_oldest() {
        let mut w = DedupWindow::new(2);
        w.insert(1);
        w.insert(2);
        assert!(w.contains(1));
        w.insert(3);
        assert!(!w.contains(1));
        assert!(w.contains(2) && w.contains(3));
    }

    #[test]
    fn gaps_are_counted_and_late_arrivals_forgiven() {
        let mut g = PublisherGaps::default();
        for s in [1, 2, 4, 5, 8] {
            assert!(g.record(s));
        }
        assert_eq!(g.lost(), 3);
        assert!(g.record(3));
        assert_eq!(g.lost(), 2);
        assert!(!g.record(3));
        assert_eq!(g.duplicates(), 1);
        assert_eq!(g.received(), 6);
    }

    proptest! {
        #[test]
        fn loss_is_exact_for_any_drop_set_and_local_reordering(
            n in 1u64..3000,
            drop_every in 2u64..50,
            swaps in proptest::collection::vec(0usize..3000, 0..50),
        ) {
            let mut seqs: Vec<u64> = (1..=n).filter(|s| s % drop_every != 0 || *s == n).collect();
            for i in swaps {
                if i + 1 < seqs.len() {
                    seqs.swap(i, i + 1);
                }
            }
            let mut g = PublisherGaps::default();
            for s in &seqs {
                g.record(*s);
            }
            let first = *seqs.iter().min().unwrap();
            let expected = (n - first + 1) - seqs.len() as u64;
            prop_assert_eq!(g.lost(), expected);
            prop_assert_eq!(g.received(), seqs.len() as u64);
        }
    }
}
