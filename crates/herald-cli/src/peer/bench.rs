//! `herald peer bench`: direct and datagram delivery measured against the physical limit of the
//! same machine in the same run: bare TCP and UDP ping-pong of the same payload on loopback.
//!
//! Each side runs on its own single-threaded-worker runtime (or thread for the bare sockets), so
//! producer and consumer each own one core, as two processes would.
//!
//! The direct latency phase is open loop: a pacing thread hands events over at a fixed rate
//! without waiting for acks, so a slow ack cannot lower the offered load. Two latencies are
//! recorded per event: from the `publish` call to its return (publish-to-ack, what the issue's
//! target is about), and from the event's scheduled time (adds the pacing thread's wake-up and
//! any queueing before the call: the coordinated-omission-free view).
//!
//! The blocking ping-pong is the machine's floor, but two threads blocked in `read` wake each
//! other more cheaply than two runtimes parked in `epoll_wait`. So the same TCP echo is also run
//! the way the direct phase runs: open loop at the same rate, sends spawned onto the
//! publisher's runtime by the same pacing thread, echoed by a task on the member's runtime,
//! measured from the call and from the scheduled time. Direct is compared with both.
//!
//! The echo and direct latency phases are interleaved in short alternating slices rather than
//! run one after the other: this shared virtual machine drifts (other processes, CPU frequency,
//! the host) over seconds, and with sequential phases that drift landed entirely in the ratio.
//! Both phases get the same pacing thread, runtimes, warm-up, slices and measurement points.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use herald_direct::{FnHandler, Member, MemberConfig, Message, Publisher, PublisherConfig};
use parking_lot::{Condvar, Mutex};
use serde::Serialize;

use crate::{CliError, Output};

/// Highest latency recorded (10 s); slower samples are clamped.
const LATENCY_US_MAX: u64 = 10_000_000;

/// Options of `herald peer bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Event payload in bytes (also the ping-pong size).
    #[arg(long, default_value_t = 1024)]
    pub payload_bytes: usize,
    /// Round trips of each bare ping-pong.
    #[arg(long, default_value_t = 20_000)]
    pub round_trips: u64,
    /// Offered load of the direct latency phase, events per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Length of each timed phase in milliseconds (for the echo and direct latency phases, the
    /// total over their slices).
    #[arg(long, default_value_t = 3_000)]
    pub duration_ms: u64,
    /// Slices each of the echo and direct latency phases is cut into; the two alternate.
    #[arg(long, default_value_t = 16)]
    pub slices: u64,
    /// Direct events awaiting their ack at once in the throughput phase.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// Datagrams sent as fast as possible in the datagram send-rate phase.
    #[arg(long, default_value_t = 300_000)]
    pub datagrams: u64,
    /// Offered datagram rate of the delivery phase, per second.
    #[arg(long, default_value_t = 50_000)]
    pub datagram_rate: u64,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    samples: u64,
}

impl Latency {
    fn from(h: &Histogram<u64>) -> Latency {
        Latency {
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            samples: h.len(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    payload_bytes: usize,
    bare_tcp_round_trip: Latency,
    bare_udp_round_trip: Latency,
    direct_rate_per_s: u64,
    direct_publish_to_ack: Latency,
    direct_scheduled_to_ack: Latency,
    direct_failed: u64,
    direct_p50_ratio_to_tcp: f64,
    direct_p99_ratio_to_tcp: f64,
    /// The bare TCP echo paced and threaded like the direct phase (see `bare_tcp_open_loop`).
    bare_tcp_open_loop: Latency,
    bare_tcp_open_loop_scheduled: Latency,
    /// Direct over that baseline, each measured from the call (p50, p99).
    direct_p50_ratio_to_tcp_open_loop: f64,
    direct_p99_ratio_to_tcp_open_loop: f64,
    /// Direct over that baseline, each measured from the scheduled time (p50, p99).
    direct_scheduled_p50_ratio_to_tcp_open_loop: f64,
    direct_scheduled_p99_ratio_to_tcp_open_loop: f64,
    /// The echo and direct latency phases alternate in this many slices each, of
    /// `latency_slice_events` events at `direct_rate_per_s`.
    latency_slices_per_phase: u64,
    latency_slice_events: u64,
    /// The median over slice pairs of direct's p50 (p99) over the echo's in the same pair, each
    /// from the call: a view less moved by a slow moment in one slice.
    direct_p50_ratio_to_tcp_open_loop_slice_median: f64,
    direct_p99_ratio_to_tcp_open_loop_slice_median: f64,
    direct_pipelined_acked_per_s: u64,
    direct_pipelined_in_flight: usize,
    datagram_sent_per_s: u64,
    datagram_blast_delivered_pct: f64,
    /// The same number sent with `send_datagrams` in batches of `DATAGRAM_BATCH_MAX`.
    datagram_batched_sent_per_s: u64,
    datagram_batched_delivered_pct: f64,
    datagram_paced_rate_per_s: u64,
    datagram_paced_sent: u64,
    datagram_paced_delivered_pct: f64,
    datagram_paced_lost_counted: u64,
}

fn histogram() -> Result<Histogram<u64>, CliError> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
        .context("creating a histogram")
        .map_err(CliError::Other)
}

fn record(h: &mut Histogram<u64>, elapsed: Duration) {
    let us = (elapsed.as_micros() as u64).clamp(1, LATENCY_US_MAX);
    let _ = h.record(us);
}

fn bare_tcp(payload: usize, round_trips: u64) -> Result<Histogram<u64>, CliError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; payload];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut client = TcpStream::connect(addr)?;
    client.set_nodelay(true)?;
    let mut buf = vec![7u8; payload];
    let mut h = histogram()?;
    let warmup = (round_trips / 10).min(2_000);
    for i in 0..warmup + round_trips {
        let t = Instant::now();
        client.write_all(&buf)?;
        client.read_exact(&mut buf)?;
        if i >= warmup {
            record(&mut h, t.elapsed());
        }
    }
    drop(client);
    let _ = server.join();
    Ok(h)
}

fn bare_udp(payload: usize, round_trips: u64) -> Result<Histogram<u64>, CliError> {
    let server = UdpSocket::bind("127.0.0.1:0")?;
    let addr = server.local_addr()?;
    server.set_read_timeout(Some(Duration::from_millis(500)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let echo = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(&buf[..n], from);
            }
        }
    });
    let client = UdpSocket::bind("127.0.0.1:0")?;
    client.connect(addr)?;
    client.set_read_timeout(Some(Duration::from_millis(200)))?;
    let out = vec![7u8; payload];
    let mut buf = vec![0u8; 65_536];
    let mut h = histogram()?;
    let warmup = (round_trips / 10).min(2_000);
    for i in 0..warmup + round_trips {
        let t = Instant::now();
        client.send(&out)?;
        // A lost datagram times out and is not recorded; loopback rarely loses any.
        if client.recv(&mut buf).is_ok() && i >= warmup {
            record(&mut h, t.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    Ok(h)
}

/// A single-threaded runtime driven by a thread of its own, so producer and consumer each own
/// one thread (as two processes would) and each parks directly on its own I/O driver.
struct Driven {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Driven {
    fn start(name: &str) -> Result<Driven, CliError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime")?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })
            .context("starting a runtime thread")?;
        Ok(Driven {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Setup {
    member_rt: Driven,
    publisher_rt: Driven,
    member: Member,
    publisher: Publisher,
    datagrams: Arc<AtomicU64>,
}

fn setup() -> Result<Setup, CliError> {
    let member_rt = Driven::start("bench-member")?;
    let publisher_rt = Driven::start("bench-publisher")?;
    let datagrams = Arc::new(AtomicU64::new(0));
    let counter = datagrams.clone();
    let member = member_rt.block_on(async move {
        let mut config = MemberConfig::new(
            "bench",
            "g",
            "127.0.0.1:0".parse().map_err(anyhow::Error::from)?,
        );
        config.capacity = 4096;
        let handler = FnHandler::events(move |e: herald_direct::Received| {
            if e.mode == herald_direct::Mode::Datagram {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            std::future::ready(Ok(()))
        });
        Member::start(config, Arc::new(handler))
            .await
            .map_err(anyhow::Error::from)
    })?;
    let addr = member.local_addr();
    let publisher = publisher_rt.block_on(async move {
        let p = Publisher::start(PublisherConfig::new(vec![addr])).await?;
        if !p.wait_for_topic("bench", Duration::from_secs(5)).await {
            anyhow::bail!("the bench member did not come up");
        }
        Ok::<_, anyhow::Error>(p)
    })?;
    Ok(Setup {
        member_rt,
        publisher_rt,
        member,
        publisher,
        datagrams,
    })
}

/// Longest wait for the last answers of one slice before the run is declared broken.
const SLICE_DRAIN_MS_MAX: u64 = 10_000;
/// Events each latency phase sends, paced and unrecorded, before its first timed slice, so the
/// connection, the allocator and the caches are warm for both.
const WARMUP_EVENTS: u64 = 1_000;
/// Bytes at the head of each echo message: its scheduled time and its call time, each in
/// nanoseconds since the echo's origin, so the reader needs no table of send times.
const ECHO_HEADER_BYTES: usize = 16;

/// What one latency phase recorded during one slice.
struct SliceResult {
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
struct SliceRecorder {
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
    fn answered(&self, at: Instant, called: Instant, due: Instant) {
        let mut s = self.state.lock();
        record(&mut s.from_call, at.saturating_duration_since(called));
        record(&mut s.from_due, at.saturating_duration_since(due));
        s.completed += 1;
        drop(s);
        self.completed_changed.notify_one();
    }

    fn failed(&self) {
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

/// Hands `events` events to `send`, one every `gap` from now, sleeping on this (the pacing)
/// thread until each one's scheduled time and never waiting for answers (open loop: a late
/// event goes at once), then waits for the slice's answers. Both phases are paced by this.
fn paced_slice(
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

/// The bare TCP baseline set up the way the direct path runs: the client on the publisher's
/// runtime (each send a task the pacing thread spawns there) and an echo task on the member's
/// runtime, so both pay the same runtime wake-ups. A reader task on the publisher's runtime
/// records each echo.
struct Echo {
    writer: Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>,
    reader: tokio::task::JoinHandle<()>,
    origin: Instant,
    payload_bytes: usize,
}

impl Echo {
    fn start(
        s: &Setup,
        payload_bytes: usize,
        recorder: Arc<SliceRecorder>,
    ) -> Result<Echo, CliError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let payload_bytes = payload_bytes.max(ECHO_HEADER_BYTES);
        let listener = s
            .member_rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        s.member_rt.handle().spawn(async move {
            if let Ok((sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                let (mut r, mut w) = sock.into_split();
                let mut buf = vec![0u8; payload_bytes];
                while r.read_exact(&mut buf).await.is_ok() {
                    if w.write_all(&buf).await.is_err() {
                        break;
                    }
                }
            }
        });
        let stream = s
            .publisher_rt
            .block_on(tokio::net::TcpStream::connect(addr))?;
        stream.set_nodelay(true)?;
        let (mut r, w) = stream.into_split();
        let origin = Instant::now();
        let reader = s.publisher_rt.handle().spawn(async move {
            let mut buf = vec![0u8; payload_bytes];
            while r.read_exact(&mut buf).await.is_ok() {
                let now = Instant::now();
                let (due, called) = (ns_at(&buf, 0), ns_at(&buf, 8));
                recorder.answered(
                    now,
                    origin + Duration::from_nanos(called),
                    origin + Duration::from_nanos(due),
                );
            }
        });
        Ok(Echo {
            writer: Arc::new(tokio::sync::Mutex::new(w)),
            reader,
            origin,
            payload_bytes,
        })
    }

    /// Spawns the sending of one message scheduled for `due` onto the publisher's runtime.
    fn send(&self, handle: &tokio::runtime::Handle, recorder: &Arc<SliceRecorder>, due: Instant) {
        use tokio::io::AsyncWriteExt;
        let (w, recorder, origin, payload_bytes) = (
            self.writer.clone(),
            recorder.clone(),
            self.origin,
            self.payload_bytes,
        );
        handle.spawn(async move {
            let mut msg = vec![b'x'; payload_bytes];
            let due_ns = due.saturating_duration_since(origin).as_nanos() as u64;
            msg[..8].copy_from_slice(&due_ns.to_le_bytes());
            let called_ns = origin.elapsed().as_nanos() as u64;
            msg[8..16].copy_from_slice(&called_ns.to_le_bytes());
            if w.lock().await.write_all(&msg).await.is_err() {
                recorder.failed();
            }
        });
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        // Dropping the write half (once no send task holds it) closes the connection, which
        // ends the echo task on the member's side.
        self.reader.abort();
    }
}

/// The little-endian u64 at `offset` in `buf`.
fn ns_at(buf: &[u8], offset: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[offset..offset + 8]);
    u64::from_le_bytes(b)
}

/// The bare TCP echo and the direct publish-to-ack latency, each over all its timed slices.
struct Interleaved {
    echo_from_call: Histogram<u64>,
    echo_from_due: Histogram<u64>,
    direct_from_call: Histogram<u64>,
    direct_from_due: Histogram<u64>,
    direct_failed: u64,
    slice_events: u64,
    /// Direct's p50 (p99) over the echo's in the other slice of the same pair, from the call.
    slice_p50_ratios: Vec<f64>,
    slice_p99_ratios: Vec<f64>,
}

/// Measures the echo and direct in alternating slices of `slice_events` events at `rate`, so
/// that both see the same state of the machine (other processes, CPU frequency, the host):
/// run one after the other for seconds each, any drift between the two phases would land
/// entirely in their ratio. Pairs alternate which phase goes first, so neither always follows
/// the other. Each phase's histograms are the sum of its slices; the warm-up is not recorded.
fn latency_interleaved(
    s: &Setup,
    payload: &Bytes,
    rate: u64,
    slices: u64,
    slice_events: u64,
) -> Result<Interleaved, CliError> {
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let echo_rec = Arc::new(SliceRecorder::new()?);
    let direct_rec = Arc::new(SliceRecorder::new()?);
    let echo = Echo::start(s, payload.len(), echo_rec.clone())?;
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
    paced_slice(WARMUP_EVENTS, gap, &echo_rec, ECHO, &mut send_echo)?;
    paced_slice(WARMUP_EVENTS, gap, &direct_rec, DIRECT, &mut send_direct)?;
    let mut out = Interleaved {
        echo_from_call: histogram()?,
        echo_from_due: histogram()?,
        direct_from_call: histogram()?,
        direct_from_due: histogram()?,
        direct_failed: 0,
        slice_events,
        slice_p50_ratios: Vec::new(),
        slice_p99_ratios: Vec::new(),
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
        let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
        out.slice_p50_ratios.push(ratio(
            d.from_call.value_at_quantile(0.50),
            e.from_call.value_at_quantile(0.50),
        ));
        out.slice_p99_ratios.push(ratio(
            d.from_call.value_at_quantile(0.99),
            e.from_call.value_at_quantile(0.99),
        ));
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

/// The median of `values` (the mean of the middle two for an even count), 0 if empty.
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Asks for 1 µs timer slack so the pacing thread's sleeps end close to when they should.
fn set_timer_slack_fine() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and only affects this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

fn direct_throughput(s: &Setup, payload: &Bytes, in_flight: usize, duration: Duration) -> u64 {
    s.publisher_rt.block_on(async {
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..in_flight {
            let (p, acked, stop, payload) = (
                s.publisher.clone(),
                acked.clone(),
                stop.clone(),
                payload.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if p.publish(
                        Message::new("bench", payload.clone()),
                        Duration::from_secs(5),
                    )
                    .await
                    .is_ok()
                    {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        // Let the pipeline fill before counting.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = acked.load(Ordering::Relaxed);
        let t = Instant::now();
        tokio::time::sleep(duration).await;
        let after = acked.load(Ordering::Relaxed);
        let elapsed = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        ((after - before) as f64 / elapsed.as_secs_f64()) as u64
    })
}

/// Waits until the receiver's count stops growing (bounded), then returns it.
fn settled(counter: &AtomicU64) -> u64 {
    let mut last = counter.load(Ordering::Relaxed);
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(25));
        let now = counter.load(Ordering::Relaxed);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn datagram_blast(s: &Setup, payload: &Bytes, n: u64) -> (u64, f64) {
    let before = s.datagrams.load(Ordering::Relaxed);
    let elapsed = s.publisher_rt.block_on(async {
        let t = Instant::now();
        for _ in 0..n {
            let _ = s
                .publisher
                .send_datagram(Message::new("bench", payload.clone()))
                .await;
        }
        t.elapsed()
    });
    let got = settled(&s.datagrams) - before;
    (
        (n as f64 / elapsed.as_secs_f64()) as u64,
        got as f64 * 100.0 / n as f64,
    )
}

fn datagram_blast_batched(s: &Setup, payload: &Bytes, n: u64) -> (u64, f64) {
    let before = s.datagrams.load(Ordering::Relaxed);
    let elapsed = s.publisher_rt.block_on(async {
        let t = Instant::now();
        let mut left = n;
        while left > 0 {
            let batch = left.min(herald_direct::DATAGRAM_BATCH_MAX as u64);
            let _ = s
                .publisher
                .send_datagrams((0..batch).map(|_| Message::new("bench", payload.clone())))
                .await;
            left -= batch;
        }
        t.elapsed()
    });
    let got = settled(&s.datagrams) - before;
    (
        (n as f64 / elapsed.as_secs_f64()) as u64,
        got as f64 * 100.0 / n as f64,
    )
}

fn datagram_paced(
    s: &Setup,
    payload: &Bytes,
    rate: u64,
    duration: Duration,
) -> Result<(u64, f64), CliError> {
    let before = s.datagrams.load(Ordering::Relaxed);
    let addr = s.member.local_addr();
    let sent = s.publisher_rt.block_on(async {
        // A publisher of its own, so the receiver's loss count for this phase starts from zero.
        let publisher = Publisher::start(PublisherConfig::new(vec![addr])).await?;
        if !publisher
            .wait_for_topic("bench", Duration::from_secs(5))
            .await
        {
            anyhow::bail!("the bench member did not come up");
        }
        // Sends in 1 ms ticks: rate/1000 datagrams per tick, catching up after a late tick.
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let start = Instant::now();
        let total = rate * duration.as_millis() as u64 / 1000;
        let mut sent = 0u64;
        while sent < total {
            tick.tick().await;
            let due = (start.elapsed().as_micros() as u64 * rate / 1_000_000).min(total);
            while sent < due {
                if publisher
                    .send_datagram(Message::new("bench", payload.clone()))
                    .await
                    .is_ok()
                {
                    sent += 1;
                }
            }
        }
        Ok(sent)
    })?;
    let got = settled(&s.datagrams) - before;
    Ok((sent, got as f64 * 100.0 / sent.max(1) as f64))
}

pub fn run(output: Output, args: BenchArgs) -> Result<(), CliError> {
    if args.rate == 0 || args.datagram_rate == 0 || args.payload_bytes == 0 || args.slices == 0 {
        return Err(CliError::Usage(
            "--rate, --datagram-rate, --payload-bytes and --slices must be positive".into(),
        ));
    }
    let slice_events = args.rate * args.duration_ms / 1000 / args.slices;
    if slice_events == 0 {
        return Err(CliError::Usage(
            "--rate times --duration-ms leaves no event for each of the --slices".into(),
        ));
    }
    let duration = Duration::from_millis(args.duration_ms);
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    eprintln!("bare TCP ping-pong ...");
    let tcp = bare_tcp(args.payload_bytes, args.round_trips)?;
    eprintln!("bare UDP ping-pong ...");
    let udp = bare_udp(args.payload_bytes, args.round_trips)?;
    let s = setup()?;
    eprintln!(
        "bare TCP echo and direct publish-to-ack, open loop at {}/s on the bench runtimes, \
         alternating in {} slices of {} events each ...",
        args.rate, args.slices, slice_events
    );
    let lat = latency_interleaved(&s, &payload, args.rate, args.slices, slice_events)?;
    eprintln!("direct pipelined throughput ...");
    let throughput = direct_throughput(&s, &payload, args.in_flight, duration);
    // Datagrams lost in the blast would otherwise be counted again in the paced phase.
    let (blast_rate, blast_pct) = datagram_blast(&s, &payload, args.datagrams);
    let (batched_rate, batched_pct) = datagram_blast_batched(&s, &payload, args.datagrams);
    eprintln!("datagrams at {}/s ...", args.datagram_rate);
    let lost_before = s.member.stats().datagrams_lost;
    let (paced_sent, paced_pct) = datagram_paced(&s, &payload, args.datagram_rate, duration)?;
    let lost_paced = s.member.stats().datagrams_lost - lost_before;
    let tcp_l = Latency::from(&tcp);
    let direct_l = Latency::from(&lat.direct_from_call);
    let direct_due_l = Latency::from(&lat.direct_from_due);
    let open_l = Latency::from(&lat.echo_from_call);
    let open_due_l = Latency::from(&lat.echo_from_due);
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    let report = Report {
        payload_bytes: args.payload_bytes,
        direct_p50_ratio_to_tcp: direct_l.p50_us as f64 / tcp_l.p50_us.max(1) as f64,
        direct_p99_ratio_to_tcp: direct_l.p99_us as f64 / tcp_l.p99_us.max(1) as f64,
        direct_p50_ratio_to_tcp_open_loop: ratio(direct_l.p50_us, open_l.p50_us),
        direct_p99_ratio_to_tcp_open_loop: ratio(direct_l.p99_us, open_l.p99_us),
        direct_scheduled_p50_ratio_to_tcp_open_loop: ratio(direct_due_l.p50_us, open_due_l.p50_us),
        direct_scheduled_p99_ratio_to_tcp_open_loop: ratio(direct_due_l.p99_us, open_due_l.p99_us),
        latency_slices_per_phase: args.slices,
        latency_slice_events: lat.slice_events,
        direct_p50_ratio_to_tcp_open_loop_slice_median: median(&lat.slice_p50_ratios),
        direct_p99_ratio_to_tcp_open_loop_slice_median: median(&lat.slice_p99_ratios),
        bare_tcp_open_loop: open_l,
        bare_tcp_open_loop_scheduled: open_due_l,
        bare_tcp_round_trip: tcp_l,
        bare_udp_round_trip: Latency::from(&udp),
        direct_rate_per_s: args.rate,
        direct_publish_to_ack: direct_l,
        direct_scheduled_to_ack: direct_due_l,
        direct_failed: lat.direct_failed,
        direct_pipelined_acked_per_s: throughput,
        direct_pipelined_in_flight: args.in_flight,
        datagram_sent_per_s: blast_rate,
        datagram_blast_delivered_pct: blast_pct,
        datagram_batched_sent_per_s: batched_rate,
        datagram_batched_delivered_pct: batched_pct,
        datagram_paced_rate_per_s: args.datagram_rate,
        datagram_paced_sent: paced_sent,
        datagram_paced_delivered_pct: paced_pct,
        datagram_paced_lost_counted: lost_paced,
    };
    drop(s.publisher);
    drop(s.member);
    drop(s.publisher_rt);
    drop(s.member_rt);
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        ),
        Output::Table => print_table(&report),
    }
    Ok(())
}

fn print_table(r: &Report) {
    let lat = |l: &Latency| {
        format!(
            "p50 {} µs, p99 {} µs, p99.9 {} µs",
            l.p50_us, l.p99_us, l.p999_us
        )
    };
    let rows = vec![
        vec![
            format!("bare TCP ping-pong {} B", r.payload_bytes),
            lat(&r.bare_tcp_round_trip),
            "limit".to_string(),
        ],
        vec![
            format!("bare UDP ping-pong {} B", r.payload_bytes),
            lat(&r.bare_udp_round_trip),
            "limit".to_string(),
        ],
        vec![
            format!("bare TCP echo at {}/s, bench runtimes", r.direct_rate_per_s),
            lat(&r.bare_tcp_open_loop),
            "limit, same threading".to_string(),
        ],
        vec![
            "  same, from the scheduled time".to_string(),
            lat(&r.bare_tcp_open_loop_scheduled),
            String::new(),
        ],
        vec![
            format!("direct publish-to-ack at {}/s", r.direct_rate_per_s),
            format!(
                "{} ({} failed)",
                lat(&r.direct_publish_to_ack),
                r.direct_failed
            ),
            format!(
                "p50 {:.2}x, p99 {:.2}x ping-pong; {:.2}x, {:.2}x echo",
                r.direct_p50_ratio_to_tcp,
                r.direct_p99_ratio_to_tcp,
                r.direct_p50_ratio_to_tcp_open_loop,
                r.direct_p99_ratio_to_tcp_open_loop
            ),
        ],
        vec![
            "  same, from the scheduled time".to_string(),
            lat(&r.direct_scheduled_to_ack),
            format!(
                "p50 {:.2}x, p99 {:.2}x echo",
                r.direct_scheduled_p50_ratio_to_tcp_open_loop,
                r.direct_scheduled_p99_ratio_to_tcp_open_loop
            ),
        ],
        vec![
            format!(
                "  per slice pair ({} x 2 slices of {} events)",
                r.latency_slices_per_phase, r.latency_slice_events
            ),
            String::new(),
            format!(
                "median p50 {:.2}x, p99 {:.2}x echo",
                r.direct_p50_ratio_to_tcp_open_loop_slice_median,
                r.direct_p99_ratio_to_tcp_open_loop_slice_median
            ),
        ],
        vec![
            format!(
                "direct pipelined ({} in flight)",
                r.direct_pipelined_in_flight
            ),
            format!("{} events/s acked", r.direct_pipelined_acked_per_s),
            String::new(),
        ],
        vec![
            "datagram send, as fast as possible".to_string(),
            format!(
                "{} events/s sent ({:.1}% received)",
                r.datagram_sent_per_s, r.datagram_blast_delivered_pct
            ),
            String::new(),
        ],
        vec![
            format!(
                "datagram send, batches of {} (sendmmsg)",
                herald_direct::DATAGRAM_BATCH_MAX
            ),
            format!(
                "{} events/s sent ({:.1}% received)",
                r.datagram_batched_sent_per_s, r.datagram_batched_delivered_pct
            ),
            String::new(),
        ],
        vec![
            format!("datagram at {}/s", r.datagram_paced_rate_per_s),
            format!(
                "{:.2}% delivered of {} ({} counted lost)",
                r.datagram_paced_delivered_pct,
                r.datagram_paced_sent,
                r.datagram_paced_lost_counted
            ),
            String::new(),
        ],
    ];
    crate::output::print_table(&["measurement", "result", "vs. limit"], &rows);
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
