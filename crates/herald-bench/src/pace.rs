//! The open-loop load generator: event `i` is due at `start + i / rate`, it is handed over at
//! its due time whatever happened to earlier events, and every latency counts from that due
//! time, so a stalled system shows its queue as latency instead of lowering the offered load
//! (no coordinated omission).
//!
//! The generator's own cost is measured and reported with every run: how late it handed events
//! over (its lag) and its thread's CPU time. A run whose generator fell behind its schedule (its
//! last event handed over more than [`FINAL_LAG_US_MAX`] or a tenth of the run late) is flagged
//! ([`Generated::behind`]) so no latency is reported for a load that was not offered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::clock::{Latency, histogram, mono_ns, record_ns, thread_cpu_s};

/// How late the generator may hand over the last event of its schedule (at least; or 10% of
/// the schedule's length if more) before its run counts as behind: it could not offer the load.
pub const FINAL_LAG_US_MAX: u64 = 10_000;
/// A generator lag at p99 above this is worth a note beside the figures (it is part of them).
pub const LAG_NOTE_US: u64 = 1_000;
/// Below this much time to the next due event the generator yields instead of sleeping. The
/// generator's thread asks for a timer slack of 1 ns (the default of 50 µs is what made sleeps
/// oversleep), so a sleep wakes within a few microseconds of its deadline and only this last
/// stretch is spent spinning: a generator spinning for longer takes a core from the system it
/// measures, which on a small machine is half of it.
const SPIN_NS_MAX: u64 = 20_000;
/// How long [`Recorder::room`] blocks at most before it looks again (a backstop: completions
/// wake it).
const ROOM_WAIT_MAX: Duration = Duration::from_millis(20);
/// A full window is waited on until this fraction of it (1/N) is free again, so a closed-loop
/// generator wakes once per that many completions rather than once per completion.
const ROOM_REFILL_DIVISOR: u64 = 8;

/// What the generator did, beside what the system under test did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Generated {
    /// Events the schedule offered.
    pub offered: u64,
    /// Events handed over (all of them unless the send function refused).
    pub sent: u64,
    /// From the first due time to the last hand-over.
    pub seconds: f64,
    /// How late each event was handed over after its due time.
    pub lag: Option<Latency>,
    /// CPU seconds of the generator's thread.
    pub cpu_s: f64,
    /// The generator could not keep its schedule: the figures of this run are not reported.
    pub behind: bool,
    /// The first event's due time (`mono_ns`), where throughput is counted from.
    #[serde(skip)]
    pub start_ns: u64,
}

/// The offered load: `rate` events per second for `duration`, or with `rate` 0 as fast as the
/// `room` callback allows (a closed window: the "maximum it sustains" cell) for `count_max`
/// events or `duration`, whichever ends first.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub rate: u64,
    pub duration: Duration,
    /// Events sent when `rate` is 0.
    pub count_max: u64,
}

impl Schedule {
    /// Events this schedule offers.
    pub fn count(&self) -> u64 {
        if self.rate == 0 {
            self.count_max
        } else {
            (self.rate as f64 * self.duration.as_secs_f64()).ceil() as u64
        }
    }
}

/// Runs `send(index, due_ns)` for every event of `schedule` on the calling thread. `send`
/// returns false when it could not hand the event over (counted, not retried). With `rate` 0,
/// each event is due when `room()` first says there is room, so latency counts from then;
/// `room` may block for a while when there is none ([`Recorder::room`] does) and is asked again.
pub fn run(
    schedule: Schedule,
    mut room: impl FnMut() -> bool,
    mut send: impl FnMut(u64, u64) -> bool,
) -> Result<Generated, BenchError> {
    precise_sleeps();
    let count = schedule.count();
    let mut lag: Histogram<u64> = histogram()?;
    let cpu_start = thread_cpu_s();
    let start = mono_ns();
    let duration_ns = schedule.duration.as_nanos() as u64;
    let mut sent = 0;
    let mut final_lag_ns = 0;
    let mut offered = 0;
    'events: for i in 0..count {
        // The maximum-rate cell lasts the cell's duration at most, however slow the system.
        if schedule.rate == 0 && mono_ns() - start > duration_ns {
            break;
        }
        let due = if schedule.rate == 0 {
            while !room() {
                if mono_ns() - start > duration_ns {
                    break 'events;
                }
            }
            mono_ns()
        } else {
            let due = start + (i as u128 * 1_000_000_000 / schedule.rate as u128) as u64;
            loop {
                let now = mono_ns();
                if now >= due {
                    break;
                }
                let ahead = due - now;
                if ahead > SPIN_NS_MAX {
                    std::thread::sleep(Duration::from_nanos(ahead - SPIN_NS_MAX / 2));
                } else {
                    std::thread::yield_now();
                }
            }
            due
        };
        offered += 1;
        if send(i, due) {
            sent += 1;
        }
        final_lag_ns = mono_ns().saturating_sub(due);
        record_ns(&mut lag, final_lag_ns);
    }
    let seconds = (mono_ns() - start) as f64 / 1e9;
    let lag = Latency::of(&lag);
    let allowed_ns = (FINAL_LAG_US_MAX * 1_000).max(schedule.duration.as_nanos() as u64 / 10);
    let behind = schedule.rate > 0 && final_lag_ns > allowed_ns;
    Ok(Generated {
        offered,
        sent,
        seconds,
        lag,
        cpu_s: thread_cpu_s() - cpu_start,
        behind,
        start_ns: start,
    })
}

/// Asks for sleeps that end within a few microseconds of their deadline on the calling thread
/// (Linux's timer slack, 50 µs by default, is how late a sleep may end).
fn precise_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK takes a value and changes only the calling thread's slack;
    // a failure leaves the default, which costs precision, not correctness.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_opens_as_events_finish() {
        let recorder = std::sync::Arc::new(Recorder::new().unwrap());
        assert!(recorder.room(3, 4, 1));
        // A full window: blocks for a while, then says so.
        assert!(!recorder.room(4, 4, 1));
        let waiter = {
            let recorder = recorder.clone();
            std::thread::spawn(move || while !recorder.room(4, 4, 1) {})
        };
        recorder.ok(mono_ns());
        waiter.join().unwrap();
        // Two generators share the count: one completion is half of one for each.
        assert!(!recorder.room(4, 4, 2));
        recorder.fail("refused");
        assert!(recorder.room(4, 4, 2));
    }

    #[test]
    fn offers_the_whole_schedule_in_order() {
        let mut seen = Vec::new();
        let generated = run(
            Schedule {
                rate: 20_000,
                duration: Duration::from_millis(50),
                count_max: 0,
            },
            || true,
            |i, due| {
                seen.push((i, due));
                true
            },
        )
        .unwrap();
        assert_eq!(generated.offered, 1_000);
        assert_eq!(generated.sent, 1_000);
        assert!(
            seen.windows(2)
                .all(|w| w[0].1 < w[1].1 && w[0].0 + 1 == w[1].0)
        );
    }
}

/// Collects the completions of one run from whatever threads or tasks see them.
pub struct Recorder {
    hist: parking_lot::Mutex<Histogram<u64>>,
    done: AtomicU64,
    failed: AtomicU64,
    first_error: parking_lot::Mutex<Option<String>>,
    /// When the last event completed (`mono_ns`), where throughput is counted to.
    last_ns: AtomicU64,
    /// The finished count a generator blocked in [`room`](Self::room) waits for (the lowest
    /// among several), `u64::MAX` when none waits: completions below it wake nobody.
    wake_at: AtomicU64,
    wake: parking_lot::Mutex<()>,
    woken: parking_lot::Condvar,
}

impl Recorder {
    pub fn new() -> Result<Recorder, BenchError> {
        Ok(Recorder {
            hist: parking_lot::Mutex::new(histogram()?),
            done: Default::default(),
            failed: Default::default(),
            first_error: parking_lot::Mutex::new(None),
            last_ns: Default::default(),
            wake_at: AtomicU64::new(u64::MAX),
            wake: parking_lot::Mutex::new(()),
            woken: parking_lot::Condvar::new(),
        })
    }

    /// One event completed now; it was due at `due_ns`.
    pub fn ok(&self, due_ns: u64) {
        let now = mono_ns();
        record_ns(&mut self.hist.lock(), now.saturating_sub(due_ns));
        self.done.fetch_add(1, Ordering::SeqCst);
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        self.wake_waiter();
    }

    /// One event failed.
    pub fn fail(&self, error: impl std::fmt::Display) {
        self.first_error
            .lock()
            .get_or_insert_with(|| error.to_string());
        self.failed.fetch_add(1, Ordering::SeqCst);
        self.wake_waiter();
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// Whether a generator that has handed over `sent` events, with at most `window` of them
    /// unfinished, may hand over one more; `share` is how many generators share this recorder
    /// (each gets its part of the finished count). When the window is full this blocks, without
    /// spinning, until an eighth of it is free or [`ROOM_WAIT_MAX`] passed.
    pub fn room(&self, sent: u64, window: u64, share: u64) -> bool {
        let share = share.max(1);
        let free = |margin: u64| sent + margin < self.finished() / share + window;
        if free(0) {
            return true;
        }
        let margin = (window / ROOM_REFILL_DIVISOR).min(window.saturating_sub(1));
        // The finished count at which `free(margin)` holds.
        let target = (sent + margin + 1).saturating_sub(window) * share;
        let mut guard = self.wake.lock();
        // Published before looking, and completions count before they look at it (both
        // SeqCst): either this sees the completion or the completion sees this waiter.
        self.wake_at.fetch_min(target, Ordering::SeqCst);
        if self.finished() < target {
            self.woken.wait_for(&mut guard, ROOM_WAIT_MAX);
        }
        drop(guard);
        free(0)
    }

    /// Wakes the generators blocked in [`room`](Self::room) once the count they wait for is
    /// reached; one atomic load per completion otherwise.
    fn wake_waiter(&self) {
        if self.finished() >= self.wake_at.load(Ordering::SeqCst) {
            let _guard = self.wake.lock();
            self.wake_at.store(u64::MAX, Ordering::SeqCst);
            self.woken.notify_all();
        }
    }

    /// Completed or failed so far.
    pub fn finished(&self) -> u64 {
        self.done() + self.failed()
    }

    /// Waits until `total` events finished or `timeout` passed; true when all finished.
    pub fn wait_finished(&self, total: u64, timeout: Duration) -> bool {
        let until = mono_ns() + timeout.as_nanos() as u64;
        while self.finished() < total {
            if mono_ns() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// The outcome of a run: throughput counts from the first event's due time (or `start_ns`
    /// when the generator did not run) to the last completion, so setting up and draining
    /// after the schedule do not dilute it.
    pub fn outcome(&self, generated: Generated, start_ns: u64) -> Outcome {
        let first = if generated.start_ns > 0 {
            generated.start_ns
        } else {
            start_ns
        };
        let last = self.last_ns.load(Ordering::Relaxed);
        Outcome {
            delivered: self.done(),
            failed: self.failed(),
            seconds: (last.saturating_sub(first) as f64 / 1e9).max(generated.seconds),
            latency: Latency::of(&self.hist.lock()),
            lost_counted: None,
            first_error: self.first_error.lock().clone(),
            generated,
        }
    }
}

/// What one open-loop run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Events that completed (sent, stored, handled or answered: the row says which).
    pub delivered: u64,
    /// Events whose send or publish reported a failure.
    pub failed: u64,
    /// From the first due time until the last completion.
    pub seconds: f64,
    /// From each event's due time to its completion.
    pub latency: Option<Latency>,
    /// Loss the receiver counted itself (datagram sequence gaps), where there is a receiver.
    pub lost_counted: Option<u64>,
    pub first_error: Option<String>,
    pub generated: Generated,
}

impl Outcome {
    /// Delivered events per second.
    pub fn per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.delivered as f64 / self.seconds
        } else {
            0.0
        }
    }
}
