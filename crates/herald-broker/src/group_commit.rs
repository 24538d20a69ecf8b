//! Group commit for `acks=all`: one flusher per partition covers every producer waiting on it
//! with one fsync per round.
//!
//! A produce handler appends on its connection's task, registers the end offset it needs
//! durable and awaits a oneshot; no thread is taken per request. The first waiter of an idle
//! partition starts its flusher on the blocking pool, which loops: fsync up to the log end as
//! it stands when the round starts (covering every append so far, whoever made it), answer every
//! waiter that fsync covers, and stop once nobody waits. So a round takes as many requests as
//! arrived during the previous fsync, and a partition under steady load keeps one thread busy
//! instead of waking one per request.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::warn;

use crate::topics::Partition;

/// Producers waiting for their appends to be durable, and whether a flusher is running.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    state: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    /// (end offset needed durable, where to say whether it is).
    waiters: Vec<(u64, oneshot::Sender<bool>)>,
    flushing: bool,
}

/// Resolves to `true` once every record below `end_offset` of `partition` is fsynced, `false`
/// if the fsync failed (the log then refuses writes until the broker restarts).
pub(crate) fn durable(partition: &Arc<Partition>, end_offset: u64) -> oneshot::Receiver<bool> {
    let (tx, rx) = oneshot::channel();
    if partition.log.offsets().durable_end >= end_offset {
        let _ = tx.send(true);
        return rx;
    }
    let start = {
        let mut state = partition.group_commit.state.lock();
        state.waiters.push((end_offset, tx));
        !std::mem::replace(&mut state.flushing, true)
    };
    if start {
        let partition = Arc::clone(partition);
        tokio::task::spawn_blocking(move || flush_rounds(&partition));
    }
    rx
}

/// The flusher: fsync rounds until no producer waits.
fn flush_rounds(partition: &Partition) {
    loop {
        let target = partition.log.offsets().high_watermark;
        let started = std::time::Instant::now();
        let result = partition.log.sync_to(target);
        crate::metrics::observe_fsync(started.elapsed());
        let (synced, covered) = match result {
            // The fsync covered the log as it stood when it began, often past `target`.
            Ok(()) => (true, partition.log.offsets().durable_end.max(target)),
            Err(error) => {
                warn!(partition = partition.index, %error, "fsync failed; answering waiting producers with a storage error");
                (false, target)
            }
        };
        // What the fsync covered may now be read: consumers see nothing a crash could take back.
        partition.wake_readers();
        let mut state = partition.group_commit.state.lock();
        let waiters = std::mem::take(&mut state.waiters);
        for (end, tx) in waiters {
            if !synced || end <= covered {
                // A producer that went away no longer needs its answer.
                let _ = tx.send(synced);
            } else {
                state.waiters.push((end, tx));
            }
        }
        if state.waiters.is_empty() {
            state.flushing = false;
            return;
        }
    }
}
