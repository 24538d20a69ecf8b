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

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use herald_direct::{FnHandler, Member, MemberConfig, Message, Publisher, PublisherConfig};
use parking_lot::Mutex;
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
    /// Length of each timed phase in milliseconds.
    #[arg(long, default_value_t = 3_000)]
    pub duration_ms: u64,
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

/// The bare TCP baseline measured the way the direct path is: open loop at the same rate, the
/// client on the publisher's runtime (each send a task spawned by the same pacing thread) and
/// an echo task on the member's runtime, so both pay the same runtime wake-ups. Each 1 KiB
/// message carries its number in its first 8 bytes; a reader task matches the echoes.
fn bare_tcp_open_loop(
    s: &Setup,
    payload: usize,
    rate: u64,
    duration: Duration,
) -> Result<(Histogram<u64>, Histogram<u64>), CliError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let payload = payload.max(8);
    let listener = s
        .member_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    s.member_rt.handle().spawn(async move {
        if let Ok((sock, _)) = listener.accept().await {
            let _ = sock.set_nodelay(true);
            let (mut r, mut w) = sock.into_split();
            let mut buf = vec![0u8; payload];
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
    let w = Arc::new(tokio::sync::Mutex::new(w));
    let warmup = 1000u64;
    let count = rate * duration.as_secs_f64() as u64;
    let total = warmup + count;
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let origin = Instant::now();
    // When each message's send began, in ns since `origin` (0 = not yet).
    let called: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let start = Arc::new(Mutex::new(origin));
    let (mut from_call, mut from_due) = (histogram()?, histogram()?);
    let (called2, start2) = (called.clone(), start.clone());
    let reader = s.publisher_rt.handle().spawn(async move {
        let mut buf = vec![0u8; payload];
        for _ in 0..total {
            if r.read_exact(&mut buf).await.is_err() {
                break;
            }
            let now = Instant::now();
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&buf[..8]);
            let i = u64::from_le_bytes(seq);
            if i < warmup || i >= total {
                continue;
            }
            let at = origin + Duration::from_nanos(called2[i as usize].load(Ordering::Relaxed));
            let due = *start2.lock() + gap * (i - warmup) as u32;
            record(&mut from_call, now.saturating_duration_since(at));
            record(&mut from_due, now.saturating_duration_since(due));
        }
        (from_call, from_due)
    });
    set_timer_slack_fine();
    let handle = s.publisher_rt.handle().clone();
    let mut begin = Instant::now();
    for i in 0..total {
        if i == warmup {
            begin = Instant::now();
            *start.lock() = begin;
        }
        if i >= warmup {
            let due = begin + gap * (i - warmup) as u32;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        } else {
            std::thread::sleep(gap);
        }
        let (w, called) = (w.clone(), called.clone());
        handle.spawn(async move {
            let mut msg = vec![b'x'; payload];
            msg[..8].copy_from_slice(&i.to_le_bytes());
            called[i as usize].store(origin.elapsed().as_nanos() as u64, Ordering::Relaxed);
            let _ = w.lock().await.write_all(&msg).await;
        });
    }
    let result = s
        .publisher_rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), reader).await });
    match result {
        Ok(Ok(h)) => Ok(h),
        _ => Err(CliError::Other(anyhow::anyhow!(
            "the bare open-loop TCP echo did not answer every message"
        ))),
    }
}

fn direct_latency(
    s: &Setup,
    payload: &Bytes,
    rate: u64,
    duration: Duration,
) -> Result<(Histogram<u64>, Histogram<u64>, u64), CliError> {
    let h = Arc::new(Mutex::new((histogram()?, histogram()?)));
    let failed = Arc::new(AtomicU64::new(0));
    let count = rate * duration.as_secs_f64() as u64;
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let handle = s.publisher_rt.handle().clone();
    let done = Arc::new(AtomicU64::new(0));
    // Warm up the connection and the allocator first.
    s.publisher_rt.block_on(async {
        for _ in 0..1000 {
            let _ = s
                .publisher
                .publish(
                    Message::new("bench", payload.clone()),
                    Duration::from_secs(5),
                )
                .await;
        }
    });
    set_timer_slack_fine();
    let start = Instant::now();
    for i in 0..count {
        let due = start + gap * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let (p, h, failed, done, payload) = (
            s.publisher.clone(),
            h.clone(),
            failed.clone(),
            done.clone(),
            payload.clone(),
        );
        handle.spawn(async move {
            let called = Instant::now();
            match p
                .publish(Message::new("bench", payload), Duration::from_secs(5))
                .await
            {
                Ok(_) => {
                    let mut h = h.lock();
                    record(&mut h.0, called.elapsed());
                    record(&mut h.1, due.elapsed());
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::Relaxed) < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (from_call, from_due) = h.lock().clone();
    Ok((from_call, from_due, failed.load(Ordering::Relaxed)))
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
    if args.rate == 0 || args.datagram_rate == 0 || args.payload_bytes == 0 {
        return Err(CliError::Usage(
            "--rate, --datagram-rate and --payload-bytes must be positive".into(),
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
        "bare TCP echo, open loop at {}/s on the bench runtimes ...",
        args.rate
    );
    let (tcp_open, tcp_open_due) = bare_tcp_open_loop(&s, args.payload_bytes, args.rate, duration)?;
    eprintln!("direct publish-to-ack at {}/s ...", args.rate);
    let (direct, direct_due, direct_failed) = direct_latency(&s, &payload, args.rate, duration)?;
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
    let direct_l = Latency::from(&direct);
    let direct_due_l = Latency::from(&direct_due);
    let open_l = Latency::from(&tcp_open);
    let open_due_l = Latency::from(&tcp_open_due);
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    let report = Report {
        payload_bytes: args.payload_bytes,
        direct_p50_ratio_to_tcp: direct_l.p50_us as f64 / tcp_l.p50_us.max(1) as f64,
        direct_p99_ratio_to_tcp: direct_l.p99_us as f64 / tcp_l.p99_us.max(1) as f64,
        direct_p50_ratio_to_tcp_open_loop: ratio(direct_l.p50_us, open_l.p50_us),
        direct_p99_ratio_to_tcp_open_loop: ratio(direct_l.p99_us, open_l.p99_us),
        direct_scheduled_p50_ratio_to_tcp_open_loop: ratio(direct_due_l.p50_us, open_due_l.p50_us),
        direct_scheduled_p99_ratio_to_tcp_open_loop: ratio(direct_due_l.p99_us, open_due_l.p99_us),
        bare_tcp_open_loop: open_l,
        bare_tcp_open_loop_scheduled: open_due_l,
        bare_tcp_round_trip: tcp_l,
        bare_udp_round_trip: Latency::from(&udp),
        direct_rate_per_s: args.rate,
        direct_publish_to_ack: direct_l,
        direct_scheduled_to_ack: direct_due_l,
        direct_failed,
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
