//! `herald bench matrix`: every way of delivering an event measured on this machine in one run,
//! beside the machine's own limits measured in the same run by the same process.
//!
//! The run starts what it needs as separate processes, the way a deployment would (a
//! `herald serve` child on free ports with its own data directory, `herald bench member`
//! children for the brokerless rows), drives each row open loop at a sweep of offered rates
//! ([`crate::pace`]), and stops them. Each cell reports delivered events/s, latency from each
//! event's scheduled time, loss, the CPU seconds per 100,000 events and the peak RSS of every
//! process involved, and the ratio of its latency to the matching limit. A cell whose generator
//! fell behind its schedule reports no latency and says so. The JSON form ([`Matrix`], schema
//! [`SCHEMA`], documented in `docs/choosing-a-way.md`) is what `herald advise` and the HTML
//! report read.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::clock::{Latency, ProcUsage, proc_usage};
use crate::direct::{DirectClient, Send};
use crate::kafka::{self, GroupConsumer, ProduceSpec, ProducerSettings};
use crate::limits;
use crate::pace::{Outcome, Recorder, Schedule};
use crate::procs::{MemberChild, MemberSpec, ServeChild};
use crate::score;

/// The schema name and version of [`Matrix`] JSON.
pub const SCHEMA: &str = "herald-bench-matrix/1";
/// The name of the bench's own process in a cell's costs (the client library and the
/// receivers it runs, less the load generator's thread).
const BENCH_CLIENT: &str = "herald bench (client)";
/// Distinct keys of brokered events, so per-key order can be checked.
const KEYS: u64 = 16;
/// Deadline of each direct publish and request; a member that is down fails it after this.
const DIRECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Reads of a receiver's count, 10 ms apart, before a datagram cell is closed anyway.
const SETTLE_ROUNDS_MAX: u32 = 100;
/// Fences sent at most after the datagram row to make its last losses visible.
const FENCES_MAX: u64 = 20;
/// Deadline of each request over the broker.
const BROKER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a run measures and how long.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixConfig {
    /// The `herald` binary whose `serve` and `bench member` the run starts (not in the JSON,
    /// which may be shared: it names nothing of the machine's file system).
    #[serde(skip)]
    pub herald_exe: PathBuf,
    /// Where the broker's data directory, logs and the disk bench's file go (the disk limit is
    /// measured on this directory's filesystem).
    #[serde(skip)]
    pub work_dir: PathBuf,
    /// Event sizes in bytes; every row is measured at each.
    pub sizes: Vec<usize>,
    /// Offered rates, events per second.
    pub rates: Vec<u64>,
    /// Also measure the maximum each row sustains (a closed window instead of a schedule).
    pub include_max: bool,
    /// Events in a maximum-rate cell at most (it also ends after `cell_ms`).
    pub max_events: u64,
    /// Length of each fixed-rate cell.
    pub cell_ms: u64,
    /// Another Kafka-compatible broker whose brokered rows are measured the same way.
    pub against: Option<String>,
    /// The producer of the brokered rows (acks varies per row).
    pub producer: ProducerSettings,
    /// How long the consumer stays down in the consumer-down check.
    pub consumer_down_ms: u64,
    /// Extra handling time of the third of the four services of the chain rows.
    pub chain_slow_hop_us: u64,
    /// The datagram receiver discards every Nth datagram before counting (tests loss counting).
    pub datagram_drop_every: Option<u64>,
    /// Short run for CI.
    pub quick: bool,
}

impl MatrixConfig {
    /// The full run: 1 KiB, 1,000 / 10,000 / 50,000 events/s and the maximum, 2 s per cell.
    pub fn full(herald_exe: PathBuf, work_dir: PathBuf) -> MatrixConfig {
        MatrixConfig {
            herald_exe,
            work_dir,
            sizes: vec![1024],
            rates: vec![1_000, 10_000, 50_000],
            include_max: true,
            max_events: 100_000,
            cell_ms: 2_000,
            against: None,
            producer: ProducerSettings::default(),
            consumer_down_ms: 3_000,
            chain_slow_hop_us: 2_000,
            datagram_drop_every: None,
            quick: false,
        }
    }

    /// The short run: two rates, 200 ms per cell, a small maximum cell.
    pub fn quick(herald_exe: PathBuf, work_dir: PathBuf) -> MatrixConfig {
        MatrixConfig {
            rates: vec![1_000, 5_000],
            max_events: 500,
            cell_ms: 200,
            consumer_down_ms: 500,
            quick: true,
            ..MatrixConfig::full(herald_exe, work_dir)
        }
    }

    fn schedules(&self) -> Vec<Schedule> {
        let cell = Duration::from_millis(self.cell_ms);
        let mut schedules: Vec<Schedule> = self
            .rates
            .iter()
            .map(|&rate| Schedule {
                rate,
                duration: cell,
                count_max: 0,
            })
            .collect();
        if self.include_max {
            schedules.push(Schedule {
                rate: 0,
                duration: cell,
                count_max: self.max_events,
            });
        }
        schedules
    }

    fn check(&self) -> Result<(), BenchError> {
        if self
            .sizes
            .iter()
            .any(|&s| s == 0 || s > kafka::VALUE_BYTES_MAX)
        {
            return Err(BenchError::Usage(format!(
                "sizes must be 1 to {} bytes",
                kafka::VALUE_BYTES_MAX
            )));
        }
        if self.rates.contains(&0) || (self.rates.is_empty() && !self.include_max) {
            return Err(BenchError::Usage("rates must be above 0".into()));
        }
        if self.cell_ms == 0 {
            return Err(BenchError::Usage(
                "the cell duration must be above 0".into(),
            ));
        }
        self.producer.check()
    }
}

/// The machine a run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    /// 1-minute load average at the start and the end of the run: other work on the machine.
    pub load_start: f64,
    pub load_end: f64,
}

impl Machine {
    fn read() -> Machine {
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .unwrap_or(0)
            * 1024;
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_bytes,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            load_start: load_average(),
            load_end: 0.0,
        }
    }
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// One process's cost in one cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcCost {
    pub name: String,
    /// CPU seconds this process spent per 100,000 delivered events during the cell.
    pub cpu_s_per_100k: Option<f64>,
    /// Its peak resident set since it started.
    pub rss_peak_bytes: u64,
}

/// One row at one offered rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// Events per second offered; `None` for the maximum-rate cell (a closed window).
    pub offered_per_s: Option<u64>,
    pub delivered: u64,
    pub failed: u64,
    pub delivered_per_s: f64,
    /// From each event's scheduled time to its completion (what the row's `completion` says);
    /// `None` when the generator fell behind (see `note`) or nothing completed.
    pub latency: Option<Latency>,
    /// Where a receiver timestamps arrival: one-way from the scheduled time to the receiver
    /// (datagram) or to the last service of a chain.
    pub delivery_latency: Option<Latency>,
    /// Events offered and not delivered.
    pub loss: u64,
    /// Loss the receiver counted itself (datagram sequence gaps).
    pub lost_counted: Option<u64>,
    /// Events of a key that arrived after a later one of the same key.
    pub reorders: Option<u64>,
    pub generator: crate::pace::Generated,
    pub processes: Vec<ProcCost>,
    /// p50 and p99 over the matching limit's at the same offered rate.
    pub ratio_p50: Option<f64>,
    pub ratio_p99: Option<f64>,
    pub note: Option<String>,
}

/// One way of delivery (or one limit) measured at every offered rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Stable id, e.g. `brokered-acks-all-fsync@1024`.
    pub id: String,
    /// `brokered`, `direct`, `datagram`, `request`, `chain` or `limit`.
    pub way: String,
    pub label: String,
    /// What completion means: `sent`, `stored`, `handled`, `replied` or `limit`.
    pub completion: String,
    /// `herald`, the `--against` bootstrap, or `none`.
    pub broker: String,
    pub size_bytes: usize,
    /// The producer configuration of brokered rows.
    pub producer: Option<String>,
    /// Id of the limit row its ratios are against.
    pub limit: Option<String>,
    pub cells: Vec<Cell>,
}

/// A fixed property of a way, measured by the run where it can be.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Property {
    pub value: bool,
    /// True when this run measured it; false when it follows from what completion means.
    pub measured: bool,
    pub detail: String,
}

/// The fixed properties of one way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WayProperties {
    pub way: String,
    pub survives_consumer_down: Property,
    pub survives_producer_crash: Property,
    pub needs_broker: Property,
    pub ordering_per_key: Property,
    /// The counts behind `survives_consumer_down`, where the run measured it.
    pub consumer_down: Option<ConsumerDown>,
}

/// A whole run: what `herald bench matrix --output json` prints and `herald advise` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Matrix {
    pub schema: String,
    pub herald_version: String,
    pub machine: Machine,
    pub config: MatrixConfig,
    pub rows: Vec<Row>,
    pub properties: Vec<WayProperties>,
    /// The ranking for balanced priorities.
    pub ranking: Vec<score::Ranked>,
    pub seconds: f64,
}

/// Processes whose cost a cell reports.
struct Involved<'a> {
    bench: bool,
    serve: Option<&'a ServeChild>,
    members: Vec<&'a MemberChild>,
}

impl Involved<'_> {
    /// Starts a new peak-RSS window in every process, so each cell reports its own peak.
    fn reset_peak_rss(&self) {
        if self.bench {
            crate::clock::reset_peak_rss("self");
        }
        if let Some(serve) = self.serve {
            serve.reset_peak_rss();
        }
        for m in &self.members {
            m.reset_peak_rss();
        }
    }

    fn read(&self) -> Vec<(String, ProcUsage)> {
        let mut all = Vec::new();
        if self.bench {
            all.push((BENCH_CLIENT.to_string(), proc_usage("self")));
        }
        if let Some(serve) = self.serve {
            all.push((serve.name().to_string(), serve.usage()));
        }
        for m in &self.members {
            all.push((m.name().to_string(), m.usage()));
        }
        all
    }
}

/// Measures one cell: `f` runs the load; the processes' CPU is read around it.
fn cell(
    schedule: Schedule,
    involved: &Involved<'_>,
    f: impl FnOnce(Schedule) -> Result<Outcome, BenchError>,
) -> Result<Cell, BenchError> {
    involved.reset_peak_rss();
    let before = involved.read();
    let outcome = f(schedule)?;
    let after = involved.read();
    let per_100k = |cpu_s: f64| {
        (outcome.delivered > 0).then(|| cpu_s.max(0.0) / outcome.delivered as f64 * 100_000.0)
    };
    let generator_cpu_s = outcome.generated.cpu_s;
    let mut processes: Vec<ProcCost> = before
        .iter()
        .zip(&after)
        .map(|((name, b), (_, a))| ProcCost {
            name: name.clone(),
            // The bench's own process is reported without its load generator's thread, which
            // gets a line of its own: the client's cost is the way's, the generator's is not.
            cpu_s_per_100k: per_100k(
                a.cpu_s
                    - b.cpu_s
                    - if name == BENCH_CLIENT {
                        generator_cpu_s
                    } else {
                        0.0
                    },
            ),
            rss_peak_bytes: a.rss_peak_bytes,
        })
        .collect();
    if involved.bench {
        processes.push(ProcCost {
            name: "load generator (thread of herald bench)".into(),
            cpu_s_per_100k: per_100k(generator_cpu_s),
            rss_peak_bytes: 0,
        });
    }
    Ok(from_outcome(schedule, outcome, processes))
}

fn from_outcome(schedule: Schedule, outcome: Outcome, processes: Vec<ProcCost>) -> Cell {
    let offered = outcome.generated.offered;
    let behind = outcome.generated.behind;
    let lag_p99 = outcome.generated.lag.map_or(0, |l| l.p99_us);
    let mut notes = Vec::new();
    if behind {
        notes.push(format!(
            "the load generator fell behind its schedule (lag p99 {lag_p99} µs): latency not reported"
        ));
    } else if schedule.rate > 0 && lag_p99 > crate::pace::LAG_NOTE_US {
        notes.push(format!(
            "the load generator lagged {lag_p99} µs at p99 (included in the latency)"
        ));
    }
    if outcome.failed > 0 {
        notes.push(format!(
            "{} failed: {}",
            outcome.failed,
            outcome.first_error.clone().unwrap_or_default()
        ));
    }
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    Cell {
        offered_per_s: (schedule.rate > 0).then_some(schedule.rate),
        delivered: outcome.delivered,
        failed: outcome.failed,
        delivered_per_s: outcome.per_s(),
        latency: if behind { None } else { outcome.latency },
        delivery_latency: None,
        loss: offered.saturating_sub(outcome.delivered),
        lost_counted: outcome.lost_counted,
        reorders: None,
        generator: outcome.generated,
        processes,
        ratio_p50: None,
        ratio_p99: None,
        note,
    }
}

struct RowSpec<'a> {
    id: &'a str,
    way: &'a str,
    label: String,
    completion: &'a str,
    broker: &'a str,
    size: usize,
    producer: Option<String>,
    limit: Option<&'a str>,
}

fn row(spec: RowSpec<'_>, cells: Vec<Cell>) -> Row {
    Row {
        id: format!("{}@{}", spec.id, spec.size),
        way: spec.way.into(),
        label: spec.label,
        completion: spec.completion.into(),
        broker: spec.broker.into(),
        size_bytes: spec.size,
        producer: spec.producer,
        limit: spec.limit.map(|l| format!("{l}@{}", spec.size)),
        cells,
    }
}

/// Runs the whole matrix; `progress` hears the id of each row as it starts.
pub fn run(config: &MatrixConfig, progress: &mut dyn FnMut(&str)) -> Result<Matrix, BenchError> {
    config.check()?;
    let started = crate::clock::mono_ns();
    let mut machine = Machine::read();
    std::fs::create_dir_all(&config.work_dir).map_err(BenchError::io(format!(
        "creating {}",
        config.work_dir.display()
    )))?;
    let schedules = config.schedules();
    let mut rows = Vec::new();
    let mut properties = None;
    for &size in &config.sizes {
        rows.extend(limit_rows(config, size, &schedules, progress)?);
        let (brokered, down) = brokered_rows(config, size, &schedules, progress)?;
        rows.extend(brokered);
        if let Some(against) = &config.against {
            rows.extend(against_rows(config, against, size, &schedules, progress)?);
        }
        let (brokerless, down_direct) = brokerless_rows(config, size, &schedules, progress)?;
        rows.extend(brokerless);
        if properties.is_none() {
            properties = Some(way_properties(&rows, down, down_direct));
        }
    }
    ratios(&mut rows);
    machine.load_end = load_average();
    let mut matrix = Matrix {
        schema: SCHEMA.into(),
        herald_version: env!("CARGO_PKG_VERSION").into(),
        machine,
        config: config.clone(),
        rows,
        properties: properties.unwrap_or_default(),
        ranking: Vec::new(),
        seconds: (crate::clock::mono_ns() - started) as f64 / 1e9,
    };
    matrix.ranking = score::rank(&matrix, &score::Priorities::balanced())?;
    Ok(matrix)
}

fn limit_rows(
    config: &MatrixConfig,
    size: usize,
    schedules: &[Schedule],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>, BenchError> {
    let bench_only = Involved {
        bench: true,
        serve: None,
        members: vec![],
    };
    let spec = |id, label: &str, completion| RowSpec {
        id,
        way: "limit",
        label: label.into(),
        completion,
        broker: "none",
        size,
        producer: None,
        limit: None,
    };
    progress("limit-tcp-echo");
    let mut tcp = Vec::new();
    for &s in schedules {
        tcp.push(cell(s, &bench_only, |s| limits::tcp_echo(size, s))?);
    }
    progress("limit-udp");
    let mut udp = Vec::new();
    for &s in schedules {
        udp.push(cell(s, &bench_only, |s| limits::udp_one_way(size, s))?);
    }
    progress("limit-disk");
    let mut disk = Vec::new();
    let dir = config.work_dir.join("disk");
    for &s in schedules {
        // The disk has no maximum-rate cell of its own: its cell at the highest fixed rate
        // stands in (a group commit absorbs any rate its bandwidth allows).
        let rate = if s.rate == 0 {
            config.rates.iter().copied().max().unwrap_or(1_000)
        } else {
            s.rate
        };
        disk.push(cell(s, &bench_only, |s| {
            limits::disk_group_commit(&dir, size, rate, s.duration).map(|r| r.outcome)
        })?);
    }
    Ok(vec![
        row(
            spec("limit-tcp-echo", "bare TCP echo (round trip)", "limit"),
            tcp,
        ),
        row(spec("limit-udp", "bare UDP one way", "limit"), udp),
        row(
            spec(
                "limit-disk",
                "disk: ideal group commit (write + fdatasync)",
                "limit",
            ),
            disk,
        ),
    ])
}

/// What the consumer-down check of one way saw: events offered while the consumer was stopped,
/// what the producer was told, and what arrived once the consumer was back.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ConsumerDown {
    /// Publishes (or sends) reported done while the consumer was down.
    pub published_ok: u64,
    /// Publishes that failed meanwhile.
    pub failed: u64,
    /// Delivered after the consumer returned.
    pub delivered_after: u64,
    /// Events offered while it was down.
    pub offered: u64,
}

/// A brokered producer row: id, acks, label, topic configs, the limit it is compared with.
type ProducerRow<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

fn brokered_rows(
    config: &MatrixConfig,
    size: usize,
    schedules: &[Schedule],
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<Row>, ConsumerDown), BenchError> {
    let data_dir = config.work_dir.join(format!("serve-data-{size}"));
    let _ = std::fs::remove_dir_all(&data_dir);
    let serve = ServeChild::start(
        &config.herald_exe,
        &data_dir,
        &config.work_dir.join(format!("serve-{size}.log")),
    )?;
    let bootstrap = serve.bootstrap();
    let involved = Involved {
        bench: true,
        serve: Some(&serve),
        members: vec![],
    };
    let mut rows = Vec::new();
    let variants: [ProducerRow<'_>; 5] = [
        (
            "brokered-acks-0",
            "0",
            "brokered, acks=0",
            &[("flush.ms", "0")],
            "limit-tcp-echo",
        ),
        (
            "brokered-acks-1",
            "1",
            "brokered, acks=1",
            &[("flush.ms", "0")],
            "limit-tcp-echo",
        ),
        (
            "brokered-acks-all-fsync",
            "all",
            "brokered, acks=all, fsync before the ack (flush.ms=0)",
            &[("flush.ms", "0")],
            "limit-disk",
        ),
        (
            "brokered-acks-all-interval",
            "all",
            "brokered, acks=all, fsync every second (flush.ms=1000)",
            &[("flush.ms", "1000")],
            "limit-tcp-echo",
        ),
        (
            "brokered-acks-all-never",
            "all",
            "brokered, acks=all, no fsync (flush.ms=-1)",
            &[("flush.ms", "-1")],
            "limit-tcp-echo",
        ),
    ];
    for (id, acks, label, topic_config, limit) in variants {
        progress(id);
        let topic = format!("{id}-{size}");
        kafka::create_topic(&bootstrap, &topic, 1, topic_config)?;
        let settings = config.producer.with_acks(acks);
        let mut cells = Vec::new();
        for &s in schedules {
            let spec = ProduceSpec {
                bootstrap: bootstrap.clone(),
                topic: topic.clone(),
                settings: settings.clone(),
                value_bytes: size,
                producers: 1,
                schedule: s,
                keys: KEYS,
            };
            cells.push(cell(s, &involved, |_| {
                kafka::produce(&spec, &Arc::new(Recorder::new()?))
            })?);
        }
        let completion = if acks == "0" { "sent" } else { "stored" };
        rows.push(row(
            RowSpec {
                id,
                way: "brokered",
                label: label.into(),
                completion,
                broker: "herald",
                size,
                producer: Some(settings.describe()),
                limit: Some(limit),
            },
            cells,
        ));
    }

    progress("brokered-end-to-end");
    rows.push(end_to_end_row(
        config, &bootstrap, "herald", size, schedules, &involved,
    )?);

    progress("request-broker");
    let topic = format!("rr-{size}");
    let mut cells = Vec::new();
    for &s in schedules {
        cells.push(cell(s, &involved, |s| {
            crate::direct::broker_requests(&bootstrap, &topic, size, s, BROKER_REQUEST_TIMEOUT)
        })?);
    }
    rows.push(row(
        RowSpec {
            id: "request-broker",
            way: "request",
            label: "request/response over the broker (reply topic, SDK)".into(),
            completion: "replied",
            broker: "herald",
            size,
            producer: Some("SDK: acks=all idempotent linger=0ms".into()),
            limit: Some("limit-tcp-echo"),
        },
        cells,
    ));

    progress("consumer-down-brokered");
    let down = kafka::consumer_down(
        &bootstrap,
        &format!("down-{size}"),
        200,
        Duration::from_millis(config.consumer_down_ms),
    )?;
    serve.stop();
    Ok((
        rows,
        ConsumerDown {
            published_ok: down.published_ok,
            failed: 0,
            delivered_after: down.delivered_after,
            offered: down.published_ok,
        },
    ))
}

fn end_to_end_row(
    config: &MatrixConfig,
    bootstrap: &str,
    broker: &str,
    size: usize,
    schedules: &[Schedule],
    involved: &Involved<'_>,
) -> Result<Row, BenchError> {
    let topic = format!("e2e-{size}");
    kafka::create_topic(bootstrap, &topic, 1, &[])?;
    let consumer = GroupConsumer::start(bootstrap, &topic, &format!("{topic}-group"))?;
    let settings = config.producer.clone();
    let mut cells = Vec::new();
    for &s in schedules {
        let spec = ProduceSpec {
            bootstrap: bootstrap.into(),
            topic: topic.clone(),
            settings: settings.clone(),
            value_bytes: size,
            producers: 1,
            schedule: s,
            keys: KEYS,
        };
        let before = consumer.reorders();
        let mut c = cell(s, involved, |_| kafka::end_to_end(&spec, &consumer))?;
        c.reorders = Some(consumer.reorders() - before);
        cells.push(c);
    }
    Ok(row(
        RowSpec {
            id: if broker == "herald" {
                "brokered-end-to-end"
            } else {
                "against-end-to-end"
            },
            way: "brokered",
            label: format!(
                "brokered end to end: publish until a group member polled it ({broker})"
            ),
            completion: "handled",
            broker,
            size,
            producer: Some(settings.describe()),
            limit: Some("limit-disk"),
        },
        cells,
    ))
}

fn against_rows(
    config: &MatrixConfig,
    bootstrap: &str,
    size: usize,
    schedules: &[Schedule],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>, BenchError> {
    let involved = Involved {
        bench: true,
        serve: None,
        members: vec![],
    };
    let mut rows = Vec::new();
    for (id, acks) in [
        ("against-acks-0", "0"),
        ("against-acks-1", "1"),
        ("against-acks-all", "all"),
    ] {
        progress(id);
        let topic = format!("herald-matrix-{id}-{size}");
        kafka::create_topic(bootstrap, &topic, 1, &[])?;
        let settings = config.producer.with_acks(acks);
        let mut cells = Vec::new();
        for &s in schedules {
            let spec = ProduceSpec {
                bootstrap: bootstrap.into(),
                topic: topic.clone(),
                settings: settings.clone(),
                value_bytes: size,
                producers: 1,
                schedule: s,
                keys: KEYS,
            };
            cells.push(cell(s, &involved, |_| {
                kafka::produce(&spec, &Arc::new(Recorder::new()?))
            })?);
        }
        rows.push(row(
            RowSpec {
                id,
                way: "brokered",
                label: format!("{bootstrap}: acks={acks} (its own flush policy)"),
                completion: if acks == "0" { "sent" } else { "stored" },
                broker: bootstrap,
                size,
                producer: Some(settings.describe()),
                limit: Some(if acks == "all" {
                    "limit-disk"
                } else {
                    "limit-tcp-echo"
                }),
            },
            cells,
        ));
    }
    progress("against-end-to-end");
    rows.push(end_to_end_row(
        config, bootstrap, bootstrap, size, schedules, &involved,
    )?);
    Ok(rows)
}

fn brokerless_rows(
    config: &MatrixConfig,
    size: usize,
    schedules: &[Schedule],
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<Row>, (ConsumerDown, ConsumerDown)), BenchError> {
    let exe = &config.herald_exe;
    let mut rows = Vec::new();
    let spec = |id, way, label: &str, completion, limit| RowSpec {
        id,
        way,
        label: label.into(),
        completion,
        broker: "none",
        size,
        producer: None,
        limit: Some(limit),
    };

    // Direct and requests: one member, one publisher.
    let member = MemberChild::start(
        exe,
        &MemberSpec {
            topic: "direct".into(),
            group: "g".into(),
            capacity: 1024,
            ..Default::default()
        },
    )?;
    let client = DirectClient::start(vec![member.addr], "direct")?;
    {
        let involved = Involved {
            bench: true,
            serve: None,
            members: vec![&member],
        };
        for (id, what, label, completion, way) in [
            (
                "direct",
                Send::Publish,
                "direct: publish until the member's ack",
                "handled",
                "direct",
            ),
            (
                "request-direct",
                Send::Request,
                "request/response over direct",
                "replied",
                "request",
            ),
        ] {
            progress(id);
            let mut cells = Vec::new();
            for &s in schedules {
                cells.push(cell(s, &involved, |s| {
                    client.run(what, "direct", size, s, DIRECT_TIMEOUT)
                })?);
            }
            rows.push(row(
                spec(id, way, label, completion, "limit-tcp-echo"),
                cells,
            ));
        }
    }
    let mut member = member;
    let reorders = member.report()?.reorders;
    if let Some(direct_row) = rows.iter_mut().find(|r| r.id.starts_with("direct@")) {
        // The member counts order across the whole run; direct is the row that can reorder.
        if let Some(first) = direct_row.cells.first_mut() {
            first.reorders = Some(reorders);
        }
    }

    // Datagrams: a receiver of their own, with the optional drop hook.
    progress("datagram");
    let mut receiver = MemberChild::start(
        exe,
        &MemberSpec {
            topic: "datagram".into(),
            group: "g".into(),
            capacity: 1024,
            drop_every: config.datagram_drop_every,
            ..Default::default()
        },
    )?;
    let sender = DirectClient::start(vec![receiver.addr], "datagram")?;
    let mut cells = Vec::new();
    // Each cell counts from the previous cell's last report, so a datagram arriving between
    // two cells is counted in one of them.
    let mut before = receiver.report()?;
    for &s in schedules {
        let mut c = {
            let involved = Involved {
                bench: true,
                serve: None,
                members: vec![&receiver],
            };
            cell(s, &involved, |s| {
                sender.run(Send::Datagram, "datagram", size, s, DIRECT_TIMEOUT)
            })?
        };
        let after = settled(&mut receiver)?;
        let received = after.datagrams - before.datagrams;
        c.loss = c.generator.sent.saturating_sub(received);
        c.lost_counted = Some(after.lost - before.lost);
        c.delivery_latency = after.latency;
        c.reorders = Some(after.reorders - before.reorders);
        c.note = c
            .note
            .or_else(|| Some(format!("received {received} of {} sent", c.generator.sent)));
        cells.push(c);
        before = after;
    }
    // A receiver sees a datagram lost only when a later one arrives, so the last cell's tail
    // would go uncounted: fences are sent until one arrives, and what the receiver counted
    // until then (less the fences it missed itself) is added to the last cell's counted loss.
    let last = before;
    let fence = Schedule {
        rate: 0,
        duration: Duration::from_secs(1),
        count_max: 1,
    };
    let mut fences = 0;
    let mut now = last.clone();
    while now.datagrams == last.datagrams && fences < FENCES_MAX {
        sender.run(Send::Datagram, "datagram", size, fence, DIRECT_TIMEOUT)?;
        fences += 1;
        std::thread::sleep(Duration::from_millis(5));
        now = receiver.report()?;
    }
    let fences_missed = fences - (now.datagrams - last.datagrams).min(fences);
    if let Some(c) = cells.last_mut() {
        let tail = (now.lost - last.lost).saturating_sub(fences_missed);
        c.lost_counted = c.lost_counted.map(|l| l + tail);
    }
    rows.push(row(
        spec(
            "datagram",
            "datagram",
            "datagram: send (one-way delivery beside)",
            "sent",
            "limit-udp",
        ),
        cells,
    ));

    // Chains of four services, the third one slow.
    for (id, chain, label, what) in [
        (
            "chain-event",
            "event",
            "chain of 4, event-driven: each hop closed when the next acked",
            Send::Publish,
        ),
        (
            "chain-request",
            "request",
            "chain of 4, request/response: every request open until the last returns",
            Send::Request,
        ),
    ] {
        progress(id);
        let mut services: Vec<MemberChild> = Vec::new();
        for hop in (1..=4).rev() {
            let next = services
                .last()
                .map(|m| (m.addr, format!("{id}-{}", hop + 1)));
            services.push(MemberChild::start(
                exe,
                &MemberSpec {
                    topic: format!("{id}-{hop}"),
                    group: "g".into(),
                    capacity: 1024,
                    next,
                    chain: Some(chain.into()),
                    delay_us: if hop == 3 {
                        config.chain_slow_hop_us
                    } else {
                        0
                    },
                    ..Default::default()
                },
            )?);
        }
        let first_topic = format!("{id}-1");
        let caller = DirectClient::start(vec![services[3].addr], &first_topic)?;
        let mut cells = Vec::new();
        for &s in schedules {
            let mut c = {
                let involved = Involved {
                    bench: true,
                    serve: None,
                    members: services.iter().collect(),
                };
                cell(s, &involved, |s| {
                    caller.run(what, &first_topic, size, s, DIRECT_TIMEOUT * 4)
                })?
            };
            if chain == "event" {
                // The last hop's arrival, from the caller's scheduled time: the whole chain.
                std::thread::sleep(Duration::from_millis(50));
                c.delivery_latency = services[0].report()?.latency;
            }
            cells.push(c);
        }
        for s in services {
            s.stop();
        }
        let mut r = row(spec(id, "chain", label, "handled", "limit-tcp-echo"), cells);
        if chain == "request" {
            r.completion = "replied".into();
        }
        rows.push(r);
    }

    // Consumer down: direct publishes must fail (or wait), never succeed unhandled.
    progress("consumer-down-direct");
    let down_ms = config.consumer_down_ms;
    let addr = member.addr;
    member.stop();
    let offered = 100;
    let outcome = client.run(
        Send::Publish,
        "direct",
        size,
        Schedule {
            rate: (offered * 1000 / down_ms.max(1)).max(1),
            duration: Duration::from_millis(down_ms),
            count_max: 0,
        },
        Duration::from_millis(200),
    )?;
    let mut back = MemberChild::start(
        exe,
        &MemberSpec {
            topic: "direct".into(),
            group: "g".into(),
            bind: Some(addr),
            capacity: 1024,
            ..Default::default()
        },
    )?;
    std::thread::sleep(Duration::from_millis(200));
    let direct_down = ConsumerDown {
        published_ok: outcome.delivered,
        failed: outcome.failed,
        delivered_after: back.report()?.direct,
        offered: outcome.generated.offered,
    };
    back.stop();

    progress("consumer-down-datagram");
    let addr = receiver.addr;
    receiver.stop();
    let outcome = sender.run(
        Send::Datagram,
        "datagram",
        size,
        Schedule {
            rate: (offered * 1000 / down_ms.max(1)).max(1),
            duration: Duration::from_millis(down_ms),
            count_max: 0,
        },
        DIRECT_TIMEOUT,
    )?;
    let mut back = MemberChild::start(
        exe,
        &MemberSpec {
            topic: "datagram".into(),
            group: "g".into(),
            bind: Some(addr),
            capacity: 1024,
            ..Default::default()
        },
    )?;
    std::thread::sleep(Duration::from_millis(200));
    let datagram_down = ConsumerDown {
        published_ok: outcome.delivered,
        failed: outcome.failed,
        delivered_after: back.report()?.datagrams,
        offered: outcome.generated.offered,
    };
    back.stop();
    Ok((rows, (direct_down, datagram_down)))
}

/// The receiver's report once its datagram count stopped moving: what is still in flight on
/// loopback arrives within milliseconds, and a datagram counted in the next cell would make
/// this one's loss look larger and the next one's smaller.
fn settled(receiver: &mut MemberChild) -> Result<crate::member::MemberReport, BenchError> {
    let mut last = receiver.report()?;
    for _ in 0..SETTLE_ROUNDS_MAX {
        std::thread::sleep(Duration::from_millis(10));
        let now = receiver.report()?;
        let moved = now.datagrams != last.datagrams;
        // Latency is per report: keep what the earlier reads took.
        let latency = match (last.latency, now.latency) {
            (Some(a), Some(b)) if a.count >= b.count => Some(a),
            (a, b) => b.or(a),
        };
        last = crate::member::MemberReport { latency, ..now };
        if !moved {
            break;
        }
    }
    Ok(last)
}

fn prop(value: bool, measured: bool, detail: impl Into<String>) -> Property {
    Property {
        value,
        measured,
        detail: detail.into(),
    }
}

fn way_properties(
    rows: &[Row],
    brokered: ConsumerDown,
    (direct, datagram): (ConsumerDown, ConsumerDown),
) -> Vec<WayProperties> {
    let reorders = |id: &str| -> u64 {
        rows.iter()
            .filter(|r| r.id.starts_with(id))
            .flat_map(|r| &r.cells)
            .filter_map(|c| c.reorders)
            .sum()
    };
    vec![
        WayProperties {
            way: "brokered".into(),
            consumer_down: Some(brokered),
            survives_consumer_down: prop(
                brokered.delivered_after == brokered.published_ok && brokered.published_ok > 0,
                true,
                format!(
                    "{} of {} events stored while the consumer was down were delivered after it returned",
                    brokered.delivered_after, brokered.published_ok
                ),
            ),
            survives_producer_crash: prop(
                true,
                false,
                "with acks=1 or all the event is in the broker once publish returned (acks=0: no)",
            ),
            needs_broker: prop(true, false, "a broker process (here a herald serve child)"),
            ordering_per_key: prop(
                true,
                reorders("brokered-end-to-end") == 0,
                format!(
                    "per partition, so per key; {} out of order seen end to end",
                    reorders("brokered-end-to-end")
                ),
            ),
        },
        WayProperties {
            way: "direct".into(),
            consumer_down: Some(direct),
            survives_consumer_down: prop(
                false,
                true,
                format!(
                    "while the member was down {} of {} publishes failed, {} reported success, {} delivered after it returned",
                    direct.failed, direct.offered, direct.published_ok, direct.delivered_after
                ),
            ),
            survives_producer_crash: prop(
                true,
                false,
                "publish returns once a member handled the event",
            ),
            needs_broker: prop(false, false, "publisher and member talk directly"),
            ordering_per_key: prop(
                false,
                true,
                format!(
                    "pipelined publishes may overtake each other; {} out of order seen",
                    reorders("direct@")
                ),
            ),
        },
        WayProperties {
            way: "datagram".into(),
            consumer_down: Some(datagram),
            survives_consumer_down: prop(
                false,
                true,
                format!(
                    "of {} datagrams offered while the receiver was down, {} left (the rest refused: no receiver known), {} delivered after it returned",
                    datagram.offered, datagram.published_ok, datagram.delivered_after
                ),
            ),
            survives_producer_crash: prop(false, false, "sent is all a send knows"),
            needs_broker: prop(false, false, "UDP from publisher to member"),
            ordering_per_key: prop(
                false,
                true,
                format!(
                    "no order guarantee; {} out of order seen",
                    reorders("datagram@")
                ),
            ),
        },
        WayProperties {
            way: "request".into(),
            consumer_down: None,
            survives_consumer_down: prop(
                false,
                false,
                "the caller waits for a reply and fails at its deadline",
            ),
            survives_producer_crash: prop(
                false,
                false,
                "the caller crashing loses the reply it was waiting for",
            ),
            needs_broker: prop(
                false,
                false,
                "direct needs none; over a broker it needs one",
            ),
            ordering_per_key: prop(false, false, "each request stands alone"),
        },
    ]
}

/// Fills in each cell's ratios to its limit's cell at the same offered rate.
fn ratios(rows: &mut [Row]) {
    let limits: Vec<Row> = rows.iter().filter(|r| r.way == "limit").cloned().collect();
    for r in rows.iter_mut() {
        let Some(limit) = r
            .limit
            .as_ref()
            .and_then(|id| limits.iter().find(|l| &l.id == id))
        else {
            continue;
        };
        for (c, l) in r.cells.iter_mut().zip(&limit.cells) {
            if let (Some(a), Some(b)) = (c.latency, l.latency) {
                c.ratio_p50 = Some(a.p50_us as f64 / b.p50_us.max(1) as f64);
                c.ratio_p99 = Some(a.p99_us as f64 / b.p99_us.max(1) as f64);
            }
        }
    }
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else {
        format!("{v} µs")
    }
}

fn rate(v: f64) -> String {
    let v = v.round() as u64;
    let s = v.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The table as markdown: one line per row and rate, then the properties and the ranking.
pub fn markdown(m: &Matrix) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Machine: {} CPUs, {:.0} GiB, Linux {}, load {:.2} -> {:.2}; {} s per cell{}\n\n",
        m.machine.cpus,
        m.machine.memory_bytes as f64 / (1u64 << 30) as f64,
        m.machine.kernel,
        m.machine.load_start,
        m.machine.load_end,
        m.config.cell_ms as f64 / 1000.0,
        if m.config.quick { " (quick)" } else { "" }
    ));
    out.push_str("| way | size | offered/s | delivered/s | p50 | p99 | p99.9 | completes when | loss | CPU s/100k (bench client; broker or members; load generator) | peak RSS MiB (bench; broker or members) | x limit p50 / p99 | note |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &m.rows {
        for c in &r.cells {
            let (p50, p99, p999) = c
                .latency
                .map(|l| (us(l.p50_us), us(l.p99_us), us(l.p999_us)))
                .unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
            let cpu: Vec<String> = c
                .processes
                .iter()
                .map(|p| p.cpu_s_per_100k.map_or("-".into(), |v| format!("{v:.2}")))
                .collect();
            let rss: Vec<String> = c
                .processes
                .iter()
                .filter(|p| p.rss_peak_bytes > 0)
                .map(|p| format!("{:.0}", p.rss_peak_bytes as f64 / (1u64 << 20) as f64))
                .collect();
            let ratio = match (c.ratio_p50, c.ratio_p99) {
                (Some(a), Some(b)) => format!("{a:.1}x / {b:.1}x"),
                _ => "-".into(),
            };
            let mut note = c.note.clone().unwrap_or_default();
            if let Some(d) = c.delivery_latency {
                note = format!(
                    "{}arrival p50 {} p99 {}",
                    if note.is_empty() {
                        String::new()
                    } else {
                        format!("{note}; ")
                    },
                    us(d.p50_us),
                    us(d.p99_us)
                );
            }
            if let Some(lost) = c.lost_counted {
                note = format!("{note}; receiver counted {lost} lost");
            }
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.label,
                r.size_bytes,
                c.offered_per_s.map_or("max".into(), |o| rate(o as f64)),
                rate(c.delivered_per_s),
                p50,
                p99,
                p999,
                r.completion,
                c.loss,
                cpu.join("; "),
                rss.join("; "),
                ratio,
                note.trim_start_matches("; ")
            ));
        }
    }
    out.push_str("\n| way | survives consumer down | survives producer crash after publish returned | needs a broker | ordering per key |\n|---|---|---|---|---|\n");
    for p in &m.properties {
        let show = |p: &Property| {
            format!(
                "{}{}: {}",
                if p.value { "yes" } else { "no" },
                if p.measured { " (measured)" } else { "" },
                p.detail
            )
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            p.way,
            show(&p.survives_consumer_down),
            show(&p.survives_producer_crash),
            show(&p.needs_broker),
            show(&p.ordering_per_key)
        ));
    }
    out.push_str("\nRanking for balanced priorities:\n\n");
    out.push_str(&score::describe(&m.ranking));
    out
}
