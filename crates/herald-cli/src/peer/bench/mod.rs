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
//! Both phases get the same pacing thread, runtimes, warm-up, slices and measurement points.//!
//! `herald_bench::baseline` holds the bare-socket measurements (shared with the matrix), `slices` the
//! interleaving of the echo and direct latency phases, `report` the output.

mod report;
mod slices;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use herald_direct::tls::{MemberTls, PublisherTls, TlsFiles};
use herald_direct::{FnHandler, Member, MemberConfig, Message, Publisher, PublisherConfig};

use crate::{CliError, Output};
use herald_bench::baseline::{Driven, bare_tcp, bare_udp};
use report::{Latency, Report, print_table};
use slices::{latency_interleaved, median, tls_interleaved};

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
    #[arg(long, default_value_t = 256, alias = "in-flight")]
    pub in_flight_max: usize,
    /// Datagrams sent as fast as possible in the datagram send-rate phase.
    #[arg(long, default_value_t = 300_000)]
    pub datagrams: u64,
    /// Offered datagram rate of the delivery phase, per second.
    #[arg(long, default_value_t = 50_000)]
    pub datagram_rate: u64,
}

struct Setup {
    member_rt: Driven,
    publisher_rt: Driven,
    member: Member,
    publisher: Publisher,
    datagrams: Arc<AtomicU64>,
    /// A second member and publisher on the same runtimes, over TLS.
    tls: TlsPair,
}

/// Topic of the TLS member.
const TLS_TOPIC: &str = "bench-tls";

/// The TLS member and its publisher, and the directory of the certificates made for them.
struct TlsPair {
    /// Serves the TLS phase; held so it runs until the report is made.
    _member: Member,
    publisher: Publisher,
    _pki: tempfile::TempDir,
}

/// A CA and a certificate for each side, made for this run (rcgen), in a temporary directory.
fn bench_pki() -> anyhow::Result<(tempfile::TempDir, TlsFiles, TlsFiles)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    std::fs::write(
        dir.path().join("ca.pem"),
        ca_params.self_signed(&ca_key)?.pem(),
    )?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut files = Vec::new();
    for name in ["member", "publisher"] {
        let key = KeyPair::generate()?;
        let certificate =
            CertificateParams::new(vec![format!("{name}.bench")])?.signed_by(&key, &issuer)?;
        let (cert_path, key_path) = (
            dir.path().join(format!("{name}.pem")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, certificate.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        files.push(TlsFiles {
            ca: dir.path().join("ca.pem"),
            certificate: Some(cert_path),
            key: Some(key_path),
        });
    }
    let publisher = files.pop().context("no publisher certificate")?;
    let member = files.pop().context("no member certificate")?;
    Ok((dir, member, publisher))
}

fn tls_setup(member_rt: &Driven, publisher_rt: &Driven) -> Result<TlsPair, CliError> {
    let (pki, member_files, publisher_files) = bench_pki()?;
    let member = member_rt.block_on(async move {
        let mut config = MemberConfig::new(
            TLS_TOPIC,
            "g",
            "127.0.0.1:0".parse().map_err(anyhow::Error::from)?,
        );
        config.capacity = 4096;
        config.tls = Some(MemberTls::load(&member_files)?);
        let handler = FnHandler::events(|_e: herald_direct::Received| std::future::ready(Ok(())));
        Member::start(config, Arc::new(handler))
            .await
            .map_err(anyhow::Error::from)
    })?;
    let addr = member.local_addr();
    let publisher = publisher_rt.block_on(async move {
        let mut config = PublisherConfig::new(vec![addr]);
        config.tls = Some(PublisherTls::load(&publisher_files, None)?);
        let p = Publisher::start(config).await?;
        if !p.wait_for_topic(TLS_TOPIC, Duration::from_secs(5)).await {
            anyhow::bail!("the bench TLS member did not come up");
        }
        Ok::<_, anyhow::Error>(p)
    })?;
    Ok(TlsPair {
        _member: member,
        publisher,
        _pki: pki,
    })
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
    let tls = tls_setup(&member_rt, &publisher_rt)?;
    Ok(Setup {
        member_rt,
        publisher_rt,
        member,
        publisher,
        datagrams,
        tls,
    })
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
    eprintln!(
        "direct publish-to-ack in plain TCP and over TLS, alternating in {} slices of {} events \
         each ...",
        args.slices, slice_events
    );
    let tls_lat = tls_interleaved(&s, &payload, args.rate, args.slices, slice_events)?;
    eprintln!("direct pipelined throughput ...");
    let throughput = direct_throughput(&s, &payload, args.in_flight_max, duration);
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
        direct_p50_ratio_to_tcp_open_loop_slice_median: median(
            &lat.pairs
                .iter()
                .map(|p| ratio(p.direct_p50_us, p.echo_p50_us))
                .collect::<Vec<_>>(),
        ),
        direct_p99_ratio_to_tcp_open_loop_slice_median: median(
            &lat.pairs
                .iter()
                .map(|p| ratio(p.direct_p99_us, p.echo_p99_us))
                .collect::<Vec<_>>(),
        ),
        latency_slice_pairs: lat.pairs,
        bare_tcp_open_loop: open_l,
        bare_tcp_open_loop_scheduled: open_due_l,
        bare_tcp_round_trip: tcp_l,
        bare_udp_round_trip: Latency::from(&udp),
        direct_rate_per_s: args.rate,
        direct_publish_to_ack: direct_l,
        direct_scheduled_to_ack: direct_due_l,
        direct_failed: lat.direct_failed,
        direct_pipelined_acked_per_s: throughput,
        direct_pipelined_in_flight: args.in_flight_max,
        datagram_sent_per_s: blast_rate,
        datagram_blast_delivered_pct: blast_pct,
        datagram_batched_sent_per_s: batched_rate,
        datagram_batched_delivered_pct: batched_pct,
        datagram_paced_rate_per_s: args.datagram_rate,
        datagram_paced_sent: paced_sent,
        datagram_paced_delivered_pct: paced_pct,
        datagram_paced_lost_counted: lost_paced,
        direct_tls_plain_publish_to_ack: Latency::from(&tls_lat.plain_from_call),
        direct_tls_publish_to_ack: Latency::from(&tls_lat.tls_from_call),
        direct_tls_failed: tls_lat.failed,
        direct_tls_p50_ratio_to_plain: ratio(
            tls_lat.tls_from_call.value_at_quantile(0.50),
            tls_lat.plain_from_call.value_at_quantile(0.50),
        ),
        direct_tls_p99_ratio_to_plain: ratio(
            tls_lat.tls_from_call.value_at_quantile(0.99),
            tls_lat.plain_from_call.value_at_quantile(0.99),
        ),
        direct_tls_p50_ratio_to_plain_slice_median: median(
            &tls_lat
                .pairs
                .iter()
                .map(|p| ratio(p.tls_p50_us, p.plain_p50_us))
                .collect::<Vec<_>>(),
        ),
        direct_tls_slice_pairs: tls_lat.pairs,
    };
    drop(s.tls);
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
