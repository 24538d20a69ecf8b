//! Telemetry over datagrams: N sensors send readings by UDP to M base stations, and each station
//! reports, per sensor, how many readings arrived and how many were lost on the way.
//!
//! Every station is its own consumer group, so every station gets every reading (see README.md
//! for why, and for the other choice). Loss is counted by the stations from the sensors'
//! sequence numbers; nothing is acknowledged or resent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use herald::{Bus, Completed, DatagramLoss, Event, Subscription};

/// The topic every sensor publishes on.
const TOPIC: &str = "telemetry";
const SENSORS_MAX: usize = 1000;
const STATIONS_MAX: usize = 64;
const RATE_MAX: u32 = 100_000;
/// How long a reading may wait for a station to be found before it counts as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the stations get, once the sensors stopped, for datagrams still on their way.
const SETTLE_TIME_MAX: Duration = Duration::from_secs(2);
const SETTLE_POLL: Duration = Duration::from_millis(20);
/// How often the sensors look at what mDNS found while waiting for the stations.
const DISCOVERY_POLL: Duration = Duration::from_millis(50);

#[derive(Parser, Debug)]
#[command(
    about = "Sensors send telemetry by datagram to base stations, which count what was lost."
)]
struct Args {
    /// Sensor tasks, each with its own bus (its own publisher id).
    #[arg(long, default_value_t = 4)]
    sensors: usize,
    /// Base stations (with --peers, one per address instead).
    #[arg(long, default_value_t = 2)]
    stations: usize,
    /// Readings per second each sensor sends.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// How long the sensors send, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Static station addresses (HOST:PORT, comma-separated; port 0 picks a free one) instead
    /// of mDNS discovery.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<SocketAddr>,
    /// Seconds between the stations' periodic loss reports.
    #[arg(long, default_value_t = 1.0)]
    report_secs: f64,
    /// Simulate a lossy radio link: every Nth datagram a sensor sends to a station never leaves.
    #[arg(long)]
    drop_every: Option<u64>,
    /// With mDNS: how long the sensors wait to find every station before they start anyway.
    #[arg(long, default_value_t = 5.0)]
    discovery_secs: f64,
}

struct Station {
    name: String,
    sub: Subscription,
    readings: Arc<AtomicU64>,
}

/// What one sensor did.
struct SensorReport {
    name: String,
    /// Readings published (each one datagram to every station found).
    published: u64,
    /// Datagrams that left this host (fewer than published × stations with --drop-every).
    datagrams: u64,
    /// Readings that found no station in time.
    failed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    check(&args)?;
    run(args).await
}

fn check(args: &Args) -> anyhow::Result<()> {
    if args.sensors == 0 || args.sensors > SENSORS_MAX {
        bail!("--sensors must be 1 to {SENSORS_MAX}");
    }
    let stations = if args.peers.is_empty() {
        args.stations
    } else {
        args.peers.len()
    };
    if stations == 0 || stations > STATIONS_MAX {
        bail!("there must be 1 to {STATIONS_MAX} stations");
    }
    if args.rate == 0 || args.rate > RATE_MAX {
        bail!("--rate must be 1 to {RATE_MAX}");
    }
    if !(args.duration_secs > 0.0 && args.duration_secs <= 86_400.0) {
        bail!("--duration-secs must be above 0 and at most a day");
    }
    if !(args.report_secs >= 0.01 && args.report_secs <= 3600.0) {
        bail!("--report-secs must be 0.01 to 3600");
    }
    if !(args.discovery_secs >= 0.0 && args.discovery_secs <= 3600.0) {
        bail!("--discovery-secs must be 0 to 3600");
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mdns = args.peers.is_empty();
    let stations = start_stations(&args).await?;
    let sensor_url = if mdns {
        "datagram://mdns".to_string()
    } else {
        let addrs: Vec<String> = stations
            .iter()
            .filter_map(|s| s.sub.local_addr())
            .map(|a| a.to_string())
            .collect();
        format!("datagram://{}", addrs.join(","))
    };
    let mut buses = Vec::with_capacity(args.sensors);
    let mut names = HashMap::new();
    for i in 1..=args.sensors {
        let mut builder = Bus::builder_from_url(&sensor_url)?.publish_timeout(PUBLISH_TIMEOUT);
        if let Some(n) = args.drop_every {
            builder = builder.option("drop_every_nth_datagram", n.to_string());
        }
        let bus = builder.connect().await?;
        let name = format!("sensor-{i}");
        let id = bus
            .publisher_id()
            .context("a datagram bus has a publisher id")?;
        names.insert(id, name.clone());
        buses.push((name, bus));
    }
    if mdns {
        discover(
            &buses,
            stations.len(),
            Duration::from_secs_f64(args.discovery_secs),
        )
        .await;
    }
    println!(
        "{} sensors -> {} stations on topic {TOPIC:?} ({}), {} readings/s each for {} s",
        args.sensors,
        stations.len(),
        if mdns { "mDNS" } else { "static peers" },
        args.rate,
        args.duration_secs
    );

    let started = Instant::now();
    let total = ((f64::from(args.rate) * args.duration_secs).round() as u64).max(1);
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let mut tasks = Vec::with_capacity(buses.len());
    for (name, bus) in buses {
        tasks.push(tokio::spawn(sensor(name, bus, total, interval)));
    }
    let sensors_done = tokio::spawn(async move {
        let mut reports = Vec::with_capacity(tasks.len());
        for task in tasks {
            reports.push(task.await??);
        }
        Ok::<_, anyhow::Error>(reports)
    });
    tokio::pin!(sensors_done);
    let every = Duration::from_secs_f64(args.report_secs);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let reports = loop {
        tokio::select! {
            done = &mut sensors_done => break done??,
            _ = ticker.tick() => report(&stations, &names, started),
        }
    };
    let published: HashMap<String, u64> = reports
        .iter()
        .map(|r| (r.name.clone(), r.published))
        .collect();
    settle(&stations, &names, &published).await;
    final_report(&stations, &names, &reports);
    for s in stations {
        s.sub.shutdown().await?;
    }
    Ok(())
}

/// Waits (bounded) until every sensor has found every station, so that the first readings
/// reach all of them; mDNS finds stations one by one.
async fn discover(buses: &[(String, Bus)], stations: usize, within: Duration) {
    let started = Instant::now();
    loop {
        let found = buses
            .iter()
            .map(|(_, bus)| bus.reachable_groups(TOPIC).map_or(0, |g| g.len()))
            .min()
            .unwrap_or(0);
        if found >= stations {
            println!(
                "every sensor found the {stations} stations in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        if started.elapsed() >= within {
            println!(
                "after {:.1} s some sensor has found only {found} of {stations} stations; starting anyway",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        tokio::time::sleep(DISCOVERY_POLL).await;
    }
}

async fn start_stations(args: &Args) -> anyhow::Result<Vec<Station>> {
    let binds: Vec<Option<SocketAddr>> = if args.peers.is_empty() {
        vec![None; args.stations]
    } else {
        args.peers.iter().copied().map(Some).collect()
    };
    let mut stations = Vec::with_capacity(binds.len());
    for (i, bind) in binds.into_iter().enumerate() {
        let name = format!("station-{}", i + 1);
        let url = if bind.is_none() {
            "datagram://mdns"
        } else {
            "datagram://"
        };
        let bus = Bus::connect(url).await?;
        let readings = Arc::new(AtomicU64::new(0));
        let counted = readings.clone();
        // One group per station: every station gets every reading.
        let mut sub = bus.subscribe(TOPIC).group(&name);
        if let Some(addr) = bind {
            sub = sub.bind(addr);
        }
        let sub = sub
            .handle(move |_reading: Event| {
                counted.fetch_add(1, Ordering::Relaxed);
                async { Ok(()) }
            })
            .await
            .with_context(|| format!("starting {name}"))?;
        stations.push(Station {
            name,
            sub,
            readings,
        });
    }
    Ok(stations)
}

async fn sensor(
    name: String,
    bus: Bus,
    total: u64,
    interval: Duration,
) -> anyhow::Result<SensorReport> {
    let mut ticker = tokio::time::interval(interval);
    let mut datagrams = 0;
    let mut failed = 0;
    for seq in 1..=total {
        ticker.tick().await;
        let reading = serde_json::json!({
            "sensor": name,
            "seq": seq,
            "celsius": 20.0 + (seq % 50) as f64 / 10.0,
        });
        let event = Event::json(&reading)?.with_key(name.clone());
        match bus.publish(TOPIC, event).await {
            Ok(receipt) => {
                if let Completed::Sent { datagrams: n } = receipt.completed {
                    datagrams += n as u64;
                }
            }
            Err(e) => {
                if failed == 0 {
                    eprintln!("{name}: reading {seq} not sent: {e}");
                }
                failed += 1;
            }
        }
    }
    bus.close().await;
    Ok(SensorReport {
        name,
        published: total - failed,
        datagrams,
        failed,
    })
}

fn sensor_name(names: &HashMap<String, String>, loss: &DatagramLoss) -> String {
    names
        .get(&loss.publisher)
        .cloned()
        .unwrap_or_else(|| format!("publisher {}", loss.publisher))
}

/// One line per station: what it received and lost from each sensor so far.
fn report(stations: &[Station], names: &HashMap<String, String>, started: Instant) {
    for s in stations {
        let mut loss = s.sub.datagram_loss();
        loss.sort_by_key(|l| sensor_name(names, l));
        let parts: Vec<String> = loss
            .iter()
            .map(|l| {
                format!(
                    "{} received {} lost {}",
                    sensor_name(names, l),
                    l.received,
                    l.lost
                )
            })
            .collect();
        println!(
            "report t={:.1}s {}: {} readings; {}",
            started.elapsed().as_secs_f64(),
            s.name,
            s.readings.load(Ordering::Relaxed),
            if parts.is_empty() {
                "nothing yet".to_string()
            } else {
                parts.join(", ")
            }
        );
    }
}

/// Waits (bounded) until every station has accounted, as received or lost, for every reading
/// each sensor published; datagrams may still be in the sockets when the sensors stop.
async fn settle(
    stations: &[Station],
    names: &HashMap<String, String>,
    published: &HashMap<String, u64>,
) {
    let deadline = Instant::now() + SETTLE_TIME_MAX;
    while Instant::now() < deadline {
        let accounted = stations.iter().all(|s| {
            let loss = s.sub.datagram_loss();
            published.iter().all(|(name, n)| {
                loss.iter()
                    .find(|l| sensor_name(names, l) == *name)
                    .is_some_and(|l| l.received + l.lost >= *n)
            })
        });
        if accounted {
            return;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

fn final_report(stations: &[Station], names: &HashMap<String, String>, reports: &[SensorReport]) {
    let (mut published_all, mut received_all, mut lost_all, mut unaccounted_all) = (0, 0, 0, 0);
    for s in stations {
        let loss = s.sub.datagram_loss();
        for r in reports {
            let (received, lost) = loss
                .iter()
                .find(|l| sensor_name(names, l) == r.name)
                .map_or((0, 0), |l| (l.received, l.lost));
            // Readings lost after the last one a station received leave no gap it could see.
            let unaccounted = r.published.saturating_sub(received + lost);
            println!(
                "final {} {}: published {} received {} lost {} unaccounted {}",
                s.name, r.name, r.published, received, lost, unaccounted
            );
            published_all += r.published;
            received_all += received;
            lost_all += lost;
            unaccounted_all += unaccounted;
        }
    }
    let datagrams: u64 = reports.iter().map(|r| r.datagrams).sum();
    let failed: u64 = reports.iter().map(|r| r.failed).sum();
    println!(
        "total: published {published_all} received {received_all} lost {lost_all} unaccounted {unaccounted_all} (datagrams sent {datagrams}, readings with no station {failed})"
    );
}
