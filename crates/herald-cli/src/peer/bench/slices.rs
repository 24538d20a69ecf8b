//! The echo and direct latency phases, interleaved in short alternating slices paced open loop
//! by one thread, so drift of the machine between phases does not land in their ratio.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use herald_direct::Message;
use parking_lot::{Condvar, Mutex};
use serde::Serialize;

use super::Setup;
use crate::CliError;
use herald_bench::baseline::{Echo, EchoAnswers, histogram, record};

/// Longest wait for the last answers of one slice before the run is declared broken.
pub(super) const SLICE_DRAIN_MS_MAX: u64 = 10_000;
/// Events each latency phase sends, paced and unrecorded, in each of its two warm-up slices
/// before its first timed slice, so the connection, the allocator and the caches are warm for
/// both. One warm-up slice each was not enough: the first timed slice after them was often
/// slower than all the others, whichever phase it belonged to.
pub(super) const WARMUP_EVENTS: u64 = 1_000;

/// What one latency phase recorded during one slice.
pub(super) struct SliceResult {
    from_call: Histogram<u64>,
    from_due: Histogram<u64>,
    completed: u64,
    failed: u64,
}

impl SliceResult {
    fn new() -> Result<SliceResult, CliError> {
        Ok(SliceResult {
            from_call: histogram()?,
            from_due: histogram()?,
            completed: 0,
            failed: 0,
        })
    }
}

/// Collects one latency phase's answers during a slice and lets the pacing thread wait until
/// every event of the slice has been answered or has failed, so no slice's tail spills into
/// the next slice, which belongs to the other phase. The echo and direct use it alike.
pub(super) struct SliceRecorder {
    state: Mutex<SliceResult>,
    completed_changed: Condvar,
}

impl SliceRecorder {
    fn new() -> Result<SliceRecorder, CliError> {
        Ok(SliceRecorder {
            state: Mutex::new(SliceResult::new()?),
            completed_changed: Condvar::new(),
        })
    }

    /// Records an answered event: answered at `at`, called at `called`, scheduled for `due`.
    pub(super) fn answered(&self, at: Instant, called: Instant, due: Instant) {
        let mut s = self.state.lock();
        record(&mut s.from_call, at.saturating_duration_since(called));
        record(&mut s.from_due, at.saturating_duration_since(due));
        s.completed += 1;
        drop(s);
        self.completed_changed.notify_one();
    }

    pub(super) fn failed(&self) {
        let mut s = self.state.lock();
        s.failed += 1;
        s.completed += 1;
        drop(s);
        self.completed_changed.notify_one();
    }

    /// Waits until `events` events of the current slice have completed, then hands back what
    /// they recorded and starts an empty slice.
    fn finish_slice(&self, events: u64, phase: &str) -> Result<SliceResult, CliError> {
        let fresh = SliceResult::new()?;
        let deadline = Instant::now() + Duration::from_millis(SLICE_DRAIN_MS_MAX);
        let mut s = self.state.lock();
        while s.completed < events {
            if self
                .completed_changed
                .wait_until(&mut s, deadline)
                .timed_out()
            {
                break;
            }
        }
        if s.completed < events {
            return Err(CliError::Other(anyhow::anyhow!(
                "{phase}: {} of {events} events of a slice answered within {SLICE_DRAIN_MS_MAX} ms",
                s.completed
            )));
        }
        Ok(std::mem::replace(&mut *s, fresh))
    }
}

impl EchoAnswers for SliceRecorder {
    fn answered(&self, at: Instant, called: Instant, due: Instant) {
        SliceRecorder::answered(self, at, called, due);
    }

    fn failed(&self) {
        SliceRecorder::failed(self);
    }
}

/// Hands `events` events to `send`, one every `gap` from now, sleeping on this (the pacing)
/// thread until each one's scheduled time and never waiting for answers (open loop: a late
/// event goes at once), then waits for the slice's answers. Both phases are paced by this.
pub(super) fn paced_slice(
    events: u64,
    gap: Duration,
    recorder: &SliceRecorder,
    phase: &str,
    send: &mut impl FnMut(Instant),
) -> Result<SliceResult, CliError> {
    let gap_ns = gap.as_nanos() as u64;
    let begin = Instant::now();
    for i in 0..events {
        let due = begin + Duration::from_nanos(gap_ns.saturating_mul(i));
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        send(due);
    }
    recorder.finish_slice(events, phase)
}
/// The bare TCP echo and the direct publish-to-ack latency, each over all its timed slices.
pub(super) struct Interleaved {
    pub(super) echo_from_call: Histogram<u64>,
    pub(super) echo_from_due: Histogram<u64>,
    pub(super) direct_from_call: Histogram<u64>,
    pub(super) direct_from_due: Histogram<u64>,
    pub(super) direct_failed: u64,
    pub(super) slice_events: u64,
    pub(super) pairs: Vec<SlicePair>,
}

/// One echo slice and the direct slice next to it, latencies from the call.
#[derive(Debug, Serialize)]
pub(super) struct SlicePair {
    /// Which of the two ran first: "echo" or "direct".
    pub(super) first: &'static str,
    pub(super) echo_p50_us: u64,
    pub(super) echo_p99_us: u64,
    pub(super) direct_p50_us: u64,
    pub(super) direct_p99_us: u64,
}

/// Measures the echo and direct in alternating slices of `slice_events` events at `rate`, so
/// that both see the same state of the machine (other processes, CPU frequency, the host):
/// run one after the other for seconds each, any drift between the two phases would land
/// entirely in their ratio. Pairs alternate which phase goes first, so neither always follows
/// the other. Each phase's histograms are the sum of its slices; the warm-up is not recorded.
pub(super) fn latency_interleaved(
    s: &Setup,
    payload: &Bytes,
    rate: u64,
    slices: u64,
    slice_events: u64,
) -> Result<Interleaved, CliError> {
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let echo_rec = Arc::new(SliceRecorder::new()?);
    let direct_rec = Arc::new(SliceRecorder::new()?);
    let echo = Echo::start(
        &s.member_rt,
        &s.publisher_rt,
        payload.len(),
        echo_rec.clone(),
    )?;
    let handle = s.publisher_rt.handle().clone();
    let mut send_echo = |due: Instant| echo.send(&handle, &echo_rec, due);
    let mut send_direct = |due: Instant| {
        let (p, recorder, payload) = (s.publisher.clone(), direct_rec.clone(), payload.clone());
        handle.spawn(async move {
            let called = Instant::now();
            match p
                .publish(Message::new("bench", payload), Duration::from_secs(5))
                .await
            {
                Ok(_) => recorder.answered(Instant::now(), called, due),
                Err(_) => recorder.failed(),
            }
        });
    };
    const ECHO: &str = "bare TCP echo";
    const DIRECT: &str = "direct publish-to-ack";
    set_timer_slack_fine();
    // Warm up in the order the timed pairs alternate: echo, direct, direct, echo.
    paced_slice(WARMUP_EVENTS, gap, &echo_rec, ECHO, &mut send_echo)?;
    paced_slice(WARMUP_EVENTS, gap, &direct_rec, DIRECT, &mut send_direct)?;
    paced_slice(WARMUP_EVENTS, gap, &direct_rec, DIRECT, &mut send_direct)?;
    paced_slice(WARMUP_EVENTS, gap, &echo_rec, ECHO, &mut send_echo)?;
    let mut out = Interleaved {
        echo_from_call: histogram()?,
        echo_from_due: histogram()?,
        direct_from_call: histogram()?,
        direct_from_due: histogram()?,
        direct_failed: 0,
        slice_events,
        pairs: Vec::new(),
    };
    let mut echo_failed = 0;
    for pair in 0..slices {
        let (e, d) = if pair % 2 == 0 {
            let e = paced_slice(slice_events, gap, &echo_rec, ECHO, &mut send_echo)?;
            (
                e,
                paced_slice(slice_events, gap, &direct_rec, DIRECT, &mut send_direct)?,
            )
        } else {
            let d = paced_slice(slice_events, gap, &direct_rec, DIRECT, &mut send_direct)?;
            (
                paced_slice(slice_events, gap, &echo_rec, ECHO, &mut send_echo)?,
                d,
            )
        };
        out.pairs.push(SlicePair {
            first: if pair % 2 == 0 { "echo" } else { "direct" },
            echo_p50_us: e.from_call.value_at_quantile(0.50),
            echo_p99_us: e.from_call.value_at_quantile(0.99),
            direct_p50_us: d.from_call.value_at_quantile(0.50),
            direct_p99_us: d.from_call.value_at_quantile(0.99),
        });
        let add = |total: &mut Histogram<u64>, part: &Histogram<u64>| {
            total
                .add(part)
                .context("adding up slice histograms")
                .map_err(CliError::Other)
        };
        add(&mut out.echo_from_call, &e.from_call)?;
        add(&mut out.echo_from_due, &e.from_due)?;
        add(&mut out.direct_from_call, &d.from_call)?;
        add(&mut out.direct_from_due, &d.from_due)?;
        out.direct_failed += d.failed;
        echo_failed += e.failed;
    }
    if echo_failed > 0 {
        return Err(CliError::Other(anyhow::anyhow!(
            "the bare TCP echo failed to send {echo_failed} messages"
        )));
    }
    Ok(out)
}

/// Direct publish-to-ack in plain TCP and over TLS, each over all its timed slices (from the
/// call), measured like [`latency_interleaved`]: alternating slices of the same pacing.
pub(super) struct TlsInterleaved {
    pub(super) plain_from_call: Histogram<u64>,
    pub(super) tls_from_call: Histogram<u64>,
    pub(super) failed: u64,
    pub(super) pairs: Vec<TlsSlicePair>,
}

/// One plaintext slice and the TLS slice next to it, latencies from the call.
#[derive(Debug, Serialize)]
pub(super) struct TlsSlicePair {
    /// Which of the two ran first: "plain" or "tls".
    pub(super) first: &'static str,
    pub(super) plain_p50_us: u64,
    pub(super) plain_p99_us: u64,
    pub(super) tls_p50_us: u64,
    pub(super) tls_p99_us: u64,
}

/// Measures direct publish-to-ack to the plaintext member and to the TLS member in alternating
/// slices, as [`latency_interleaved`] does for the echo and direct, so the TLS cost is read
/// from the same state of the machine.
pub(super) fn tls_interleaved(
    s: &Setup,
    payload: &Bytes,
    rate: u64,
    slices: u64,
    slice_events: u64,
) -> Result<TlsInterleaved, CliError> {
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let plain_rec = Arc::new(SliceRecorder::new()?);
    let tls_rec = Arc::new(SliceRecorder::new()?);
    let handle = s.publisher_rt.handle().clone();
    let sender = |publisher: &herald_direct::Publisher,
                  topic: &'static str,
                  recorder: &Arc<SliceRecorder>| {
        let (publisher, recorder, handle) = (publisher.clone(), recorder.clone(), handle.clone());
        move |due: Instant| {
            let (p, recorder, payload) = (publisher.clone(), recorder.clone(), payload.clone());
            handle.spawn(async move {
                let called = Instant::now();
                match p
                    .publish(Message::new(topic, payload), Duration::from_secs(5))
                    .await
                {
                    Ok(_) => recorder.answered(Instant::now(), called, due),
                    Err(_) => recorder.failed(),
                }
            });
        }
    };
    let mut send_plain = sender(&s.publisher, "bench", &plain_rec);
    let mut send_tls = sender(&s.tls.publisher, super::TLS_TOPIC, &tls_rec);
    const PLAIN: &str = "direct publish-to-ack";
    const TLS: &str = "direct over TLS publish-to-ack";
    set_timer_slack_fine();
    paced_slice(WARMUP_EVENTS, gap, &plain_rec, PLAIN, &mut send_plain)?;
    paced_slice(WARMUP_EVENTS, gap, &tls_rec, TLS, &mut send_tls)?;
    paced_slice(WARMUP_EVENTS, gap, &tls_rec, TLS, &mut send_tls)?;
    paced_slice(WARMUP_EVENTS, gap, &plain_rec, PLAIN, &mut send_plain)?;
    let mut out = TlsInterleaved {
        plain_from_call: histogram()?,
        tls_from_call: histogram()?,
        failed: 0,
        pairs: Vec::new(),
    };
    for pair in 0..slices {
        let (p, t) = if pair % 2 == 0 {
            let p = paced_slice(slice_events, gap, &plain_rec, PLAIN, &mut send_plain)?;
            (
                p,
                paced_slice(slice_events, gap, &tls_rec, TLS, &mut send_tls)?,
            )
        } else {
            let t = paced_slice(slice_events, gap, &tls_rec, TLS, &mut send_tls)?;
            (
                paced_slice(slice_events, gap, &plain_rec, PLAIN, &mut send_plain)?,
                t,
            )
        };
        out.pairs.push(TlsSlicePair {
            first: if pair % 2 == 0 { "plain" } else { "tls" },
            plain_p50_us: p.from_call.value_at_quantile(0.50),
            plain_p99_us: p.from_call.value_at_quantile(0.99),
            tls_p50_us: t.from_call.value_at_quantile(0.50),
            tls_p99_us: t.from_call.value_at_quantile(0.99),
        });
        out.plain_from_call
            .add(&p.from_call)
            .context("adding up slice histograms")?;
        out.tls_from_call
            .add(&t.from_call)
            .context("adding up slice histograms")?;
        out.failed += p.failed + t.failed;
    }
    Ok(out)
}

/// The median of `values` (the mean of the middle two for an even count), 0 if empty.
pub(super) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Asks for 1 µs timer slack so the pacing thread's sleeps end close to when they should.
pub(super) fn set_timer_slack_fine() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and only affects this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}
