//! Idempotent-producer state: per producer id, its epoch and its last five batches, checked on
//! every append with Kafka's rules so a retried batch is recognised instead of written twice.

use std::collections::{HashMap, VecDeque};

use crate::batch::BatchHeader;
use crate::error::AppendError;

/// Batches remembered per producer (Kafka keeps five: `max.in.flight.requests.per.connection`).
pub(crate) const BATCHES_PER_PRODUCER: usize = 5;

/// Where one batch of a producer landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
    pub last_offset: u64,
}

/// One producer id's state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
}

impl ProducerEntry {
    fn last_offset(&self) -> u64 {
        self.batches.back().map_or(0, |b| b.last_offset)
    }
}

/// All producers of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProducerState {
    pub producers: HashMap<i64, ProducerEntry>,
}

/// Result of checking an append's batches.
pub(crate) enum Check {
    /// Apply these updates after writing.
    Accept(Vec<(i64, ProducerEntry)>),
    /// A retry of a batch already written; nothing is written.
    Duplicate(BatchMeta),
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences wrap from `i32::MAX` to 0.
fn increment_sequence(seq: i32, by: i32) -> i32 {
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

fn in_sequence(last: i32, next: i32) -> bool {
    next == increment_sequence(last, 1)
}

/// Whether a batch takes part in idempotence checks.
pub(crate) fn is_idempotent(h: &BatchHeader) -> bool {
    h.producer_id >= 0 && h.base_sequence >= 0
}

impl ProducerState {
    /// Checks `headers` (offsets already assigned) in order, as Kafka's ProducerAppendInfo does.
    pub fn check(&self, headers: &[BatchHeader]) -> Result<Check, AppendError> {
        let mut staged: Vec<(i64, ProducerEntry)> = Vec::new();
        for h in headers.iter().filter(|h| is_idempotent(h)) {
            let pid = h.producer_id;
            let current = staged
                .iter()
                .rev()
                .find(|(p, _)| *p == pid)
                .map(|(_, e)| e)
                .or_else(|| self.producers.get(&pid));
            let first_seq = h.base_sequence;
            let last_seq = increment_sequence(first_seq, h.last_offset_delta);
            let mut entry = match current {
                None => {
                    // Like Kafka 3.x: with no state (never seen, or removed by retention or
                    // DeleteRecords) any sequence is accepted and starts the producer's history.
                    ProducerEntry {
                        epoch: h.producer_epoch,
                        batches: VecDeque::new(),
                    }
                }
                Some(e) if h.producer_epoch < e.epoch => {
                    return Err(AppendError::ProducerFenced {
                        producer_id: pid,
                        producer_epoch: h.producer_epoch,
                        current_epoch: e.epoch,
                    });
                }
                Some(e) if h.producer_epoch > e.epoch => {
                    if first_seq != 0 {
                        return Err(AppendError::OutOfOrderSequence {
                            producer_id: pid,
                            producer_epoch: h.producer_epoch,
                            expected_sequence: 0,
                            sequence: first_seq,
                        });
                    }
                    ProducerEntry {
                        epoch: h.producer_epoch,
                        batches: VecDeque::new(),
                    }
                }
                Some(e) => {
                    if let Some(dup) = e
                        .batches
                        .iter()
                        .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
                    {
                        return Ok(Check::Duplicate(*dup));
                    }
                    if let Some(last) = e.batches.back() {
                        if !in_sequence(last.last_seq, first_seq) {
                            return Err(AppendError::OutOfOrderSequence {
                                producer_id: pid,
                                producer_epoch: h.producer_epoch,
                                expected_sequence: increment_sequence(last.last_seq, 1),
                                sequence: first_seq,
                            });
                        }
                    }
                    e.clone()
                }
            };
            entry.batches.push_back(BatchMeta {
                first_seq,
                last_seq,
                base_offset: h.base_offset as u64,
                last_offset: h.last_offset() as u64,
            });
            while entry.batches.len() > BATCHES_PER_PRODUCER {
                entry.batches.pop_front();
            }
            staged.push((pid, entry));
        }
        Ok(Check::Accept(staged))
    }

    /// Applies checked updates, forgetting the least recently written producers beyond the limit.
    pub fn apply(&mut self, updates: Vec<(i64, ProducerEntry)>, producers_max: usize) {
        for (pid, entry) in updates {
            self.producers.insert(pid, entry);
        }
        while self.producers.len() > producers_max {
            let oldest = self
                .producers
                .iter()
                .min_by_key(|(_, e)| e.last_offset())
                .map(|(pid, _)| *pid);
            match oldest {
                Some(pid) => self.producers.remove(&pid),
                None => break,
            };
        }
    }

    /// Records a batch read back during recovery (it was accepted when written).
    pub fn replay(&mut self, h: &BatchHeader, producers_max: usize) {
        if !is_idempotent(h) {
            return;
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: increment_sequence(h.base_sequence, h.last_offset_delta),
            base_offset: h.base_offset as u64,
            last_offset: h.last_offset() as u64,
        });
        while entry.batches.len() > BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        self.apply(Vec::new(), producers_max);
    }

    /// Forgets producers whose every batch lies below the log start (Kafka's `truncateHead`).
    pub fn truncate_head(&mut self, log_start: u64) {
        self.producers.retain(|_, e| e.last_offset() >= log_start);
    }

    /// Forgets batches at or above `end` (after truncating a torn tail).
    pub fn truncate_tail(&mut self, end: u64) {
        for e in self.producers.values_mut() {
            e.batches.retain(|b| b.last_offset < end);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, base: i64, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            total_bytes: 100,
            attributes: 0,
            last_offset_delta: records - 1,
            max_timestamp: 0,
            base_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: records,
        }
    }

    fn accept(state: &mut ProducerState, h: BatchHeader) {
        match state.check(&[h]) {
            Ok(Check::Accept(updates)) => state.apply(updates, 3),
            Ok(Check::Duplicate(_)) => panic!("unexpected duplicate"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn only_the_last_five_batches_are_recognised_as_retries() {
        let mut state = ProducerState::default();
        for i in 0..7 {
            accept(&mut state, header(1, 0, i * 2, i64::from(i) * 2, 2));
        }
        assert!(
            matches!(state.check(&[header(1, 0, 4, 0, 2)]), Ok(Check::Duplicate(m)) if m.base_offset == 4)
        );
        assert!(matches!(
            state.check(&[header(1, 0, 2, 0, 2)]),
            Err(AppendError::OutOfOrderSequence {
                expected_sequence: 14,
                ..
            })
        ));
    }

    #[test]
    fn producers_beyond_the_limit_and_below_the_log_start_are_forgotten() {
        let mut state = ProducerState::default();
        for pid in 0..5 {
            accept(&mut state, header(pid, 0, 0, pid * 10, 1));
        }
        // producers_max is 3 in `accept`: the two least recently written are gone.
        let mut pids: Vec<_> = state.producers.keys().copied().collect();
        pids.sort_unstable();
        assert_eq!(pids, vec![2, 3, 4]);
        state.truncate_head(35);
        assert_eq!(state.producers.keys().copied().collect::<Vec<_>>(), vec![4]);
        // A forgotten producer is accepted at any sequence, as Kafka does.
        assert!(matches!(
            state.check(&[header(2, 0, 9, 50, 1)]),
            Ok(Check::Accept(_))
        ));
    }

    #[test]
    fn a_retry_inside_a_multi_batch_append_is_a_duplicate_of_the_whole() {
        let mut state = ProducerState::default();
        accept(&mut state, header(1, 0, 0, 0, 2));
        let fresh = header(1, 0, 2, 2, 1);
        let retry = header(1, 0, 0, 3, 2);
        assert!(matches!(
            state.check(&[fresh, retry]),
            Ok(Check::Duplicate(m)) if m.base_offset == 0 && m.last_offset == 1
        ));
        // Two in-order batches of one producer in one append are checked against each other.
        assert!(
            matches!(state.check(&[fresh, header(1, 0, 3, 3, 1)]), Ok(Check::Accept(u)) if u.len() == 2)
        );
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert!(in_sequence(i32::MAX, 0));
        assert!(!in_sequence(3, 5));
    }
}
