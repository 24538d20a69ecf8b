//! Which offsets a broker subscription may commit: per partition, the contiguous prefix of
//! delivered records whose handler acknowledged them, and never a refused one or anything after it.

use std::collections::{BTreeMap, HashMap};

/// Where one delivered record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    InFlight,
    Acked,
    /// Refused: nothing at or past this offset may be committed while the partition is ours, so
    /// the record is read again after a restart or a rebalance.
    Nacked,
}

#[derive(Debug, Default)]
struct Partition {
    /// Delivered records not yet behind the commit point, by offset.
    pending: BTreeMap<i64, Status>,
    /// The offset to commit next (last contiguous acked + 1), once something was acked.
    ready: Option<i64>,
    /// The offset last handed to the broker in a commit.
    committed: Option<i64>,
    /// A refused record at the front of `pending`: the commit point stays before it while the
    /// partition is ours, so outcomes after it no longer matter and only in-flight records are
    /// kept (else every later record would stay in `pending` for as long as the partition is).
    blocked: bool,
}

/// The commit bookkeeping of every partition a subscription holds.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    partitions: HashMap<i32, Partition>,
}

impl OffsetTracker {
    /// A record was handed to the handler runtime.
    pub(crate) fn delivered(&mut self, partition: i32, offset: i64) {
        self.partitions
            .entry(partition)
            .or_default()
            .pending
            .insert(offset, Status::InFlight);
    }

    /// The runtime finished with a record. Outcomes for records no longer tracked (their
    /// partition was revoked meanwhile) are ignored: the partition's new owner reads them again.
    pub(crate) fn finished(&mut self, partition: i32, offset: i64, acked: bool) {
        let Some(p) = self.partitions.get_mut(&partition) else {
            return;
        };
        let Some(status) = p.pending.get_mut(&offset) else {
            return;
        };
        if *status != Status::InFlight {
            return;
        }
        if p.blocked {
            p.pending.remove(&offset);
            return;
        }
        *status = if acked { Status::Acked } else { Status::Nacked };
        while let Some(entry) = p.pending.first_entry() {
            match *entry.get() {
                Status::Acked => {
                    let (done, _) = entry.remove_entry();
                    p.ready = Some(done + 1);
                }
                Status::Nacked => {
                    p.blocked = true;
                    p.pending.retain(|_, s| *s == Status::InFlight);
                    break;
                }
                Status::InFlight => break,
            }
        }
    }

    /// Records delivered and not yet behind a commit point (finished or not), over every
    /// partition: what the tracker holds in memory.
    pub(crate) fn uncommitted(&self) -> usize {
        self.partitions.values().map(|p| p.pending.len()).sum()
    }

    /// The group starts reading `partition` at `offset` (its end, for a group that never
    /// committed there): commit that, so the group remembers where it started even if it
    /// handles nothing on the partition before it leaves.
    pub(crate) fn start_at(&mut self, partition: i32, offset: i64) {
        let p = self.partitions.entry(partition).or_default();
        if p.pending.is_empty() && p.ready.is_none() {
            p.ready = Some(offset);
        }
    }

    /// Records handed out for these partitions and not finished yet.
    pub(crate) fn in_flight(&self, partitions: &[i32]) -> usize {
        partitions
            .iter()
            .filter_map(|n| self.partitions.get(n))
            .map(|p| {
                p.pending
                    .values()
                    .filter(|s| **s == Status::InFlight)
                    .count()
            })
            .sum()
    }

    /// Commit points that moved since the last commit, as (partition, offset); they count as
    /// committed from now on (see [`OffsetTracker::commit_failed`]).
    pub(crate) fn take_commits(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (n, p) in &mut self.partitions {
            if let Some(ready) = p.ready
                && p.committed.is_none_or(|c| c < ready)
            {
                p.committed = Some(ready);
                out.push((*n, ready));
            }
        }
        out.sort_unstable();
        out
    }

    /// Sending a commit of `offset` on `partition` failed: commit it again next time.
    pub(crate) fn commit_failed(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&partition)
            && p.committed == Some(offset)
        {
            p.committed = None;
        }
    }

    /// Stops tracking partitions that are no longer ours; returns the commit point of each
    /// that has one, committed already or not: an asynchronous commit may have failed unseen,
    /// and committing a point again is harmless.
    pub(crate) fn revoke(&mut self, partitions: &[i32]) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for n in partitions {
            if let Some(p) = self.partitions.remove(n)
                && let Some(ready) = p.ready
            {
                out.push((*n, ready));
            }
        }
        out.sort_unstable();
        out
    }

    /// Stops tracking every partition; returns every commit point, as [`OffsetTracker::revoke`].
    pub(crate) fn revoke_all(&mut self) -> Vec<(i32, i64)> {
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        self.revoke(&partitions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_the_contiguous_acked_prefix() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.delivered(0, o);
        }
        t.finished(0, 11, true);
        assert!(t.take_commits().is_empty(), "offset 10 is still in flight");
        t.finished(0, 10, true);
        assert_eq!(t.take_commits(), vec![(0, 12)]);
        assert!(t.take_commits().is_empty(), "nothing moved since");
        t.finished(0, 12, true);
        t.finished(0, 14, true);
        assert_eq!(t.take_commits(), vec![(0, 13)]);
        assert_eq!(t.in_flight(&[0]), 1);
    }

    #[test]
    fn a_refused_record_blocks_commits_at_and_past_it() {
        let mut t = OffsetTracker::default();
        for o in 0..4 {
            t.delivered(3, o);
        }
        t.finished(3, 0, true);
        t.finished(3, 1, false);
        t.finished(3, 2, true);
        t.finished(3, 3, true);
        assert_eq!(t.take_commits(), vec![(3, 1)]);
        t.delivered(3, 4);
        t.finished(3, 4, true);
        assert!(t.take_commits().is_empty());
        assert_eq!(t.in_flight(&[3]), 0);
    }

    #[test]
    fn a_start_point_is_committed_until_records_move_it() {
        let mut t = OffsetTracker::default();
        t.start_at(0, 40);
        assert_eq!(t.take_commits(), vec![(0, 40)]);
        t.delivered(0, 40);
        t.finished(0, 40, true);
        assert_eq!(t.take_commits(), vec![(0, 41)]);
    }

    #[test]
    fn a_blocked_partition_keeps_only_records_in_flight() {
        let mut t = OffsetTracker::default();
        t.delivered(0, 0);
        t.delivered(0, 1);
        t.finished(0, 1, true);
        t.finished(0, 0, false);
        assert_eq!(t.uncommitted(), 0);
        for o in 2..1_000 {
            t.delivered(0, o);
            t.finished(0, o, true);
        }
        t.delivered(0, 1_000);
        assert_eq!(t.uncommitted(), 1, "only the record in flight");
        assert_eq!(t.in_flight(&[0]), 1);
        t.finished(0, 1_000, true);
        assert!(t.take_commits().is_empty());
        assert_eq!(t.uncommitted(), 0);
    }

    #[test]
    fn offsets_with_gaps_still_form_a_prefix() {
        // Compacted topics and transaction markers leave holes between delivered offsets.
        let mut t = OffsetTracker::default();
        t.delivered(1, 5);
        t.delivered(1, 9);
        t.finished(1, 9, true);
        t.finished(1, 5, true);
        assert_eq!(t.take_commits(), vec![(1, 10)]);
    }

    #[test]
    fn revoking_hands_back_uncommitted_points_and_forgets_late_outcomes() {
        let mut t = OffsetTracker::default();
        t.delivered(0, 0);
        t.delivered(0, 1);
        t.delivered(2, 7);
        t.finished(0, 0, true);
        t.finished(2, 7, true);
        assert_eq!(t.take_commits(), vec![(0, 1), (2, 8)]);
        t.commit_failed(2, 8);
        assert_eq!(t.take_commits(), vec![(2, 8)]);
        assert_eq!(t.revoke(&[0, 2]), vec![(0, 1), (2, 8)]);
        t.finished(0, 1, true);
        assert!(t.take_commits().is_empty());
        assert_eq!(t.in_flight(&[0, 2]), 0);
        t.delivered(5, 3);
        t.finished(5, 3, true);
        assert_eq!(t.revoke_all(), vec![(5, 4)]);
        assert!(t.revoke_all().is_empty());
    }
}
