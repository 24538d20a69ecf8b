//! `herald bench`: the shell over `herald-bench`. `produce`, `consume` and `end-to-end` load any
//! Kafka-protocol broker through librdkafka; `disk` measures the disk's ideal group commit;
//! `matrix` measures every way of delivery against the machine's limits and ranks them;
//! `member` is the receiving process the matrix starts (hidden).
//!
//! Producing is open-loop when `--rate` is set: message `i` is due at `start + i / rate` and its
//! latency counts from that due time, so a stalled broker shows up as latency instead of silently
//! lowering the offered load (coordinated omission). The producer's configuration (acks,
//! idempotence, requests in flight, linger) is set by flags and printed with the figures.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use herald_bench::clock::Latency;
use herald_bench::kafka::{self, ProduceSpec, ProducerSettings};
use herald_bench::pace::{Recorder, Schedule};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::{CliError, Global, Output, output};

/// `herald bench`: load generators and the trade-off matrix.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Produce `--count` messages of `--size` bytes and report throughput and ack latency.
    Produce(ProduceArgs),
    /// Read a topic from its earliest offsets to its current end and report throughput.
    Consume(ConsumeArgs),
    /// Open-loop produce while a consumer group member polls: latency from each message's due
    /// time until the consumer's poll returned it.
    EndToEnd(EndToEndArgs),
    /// The disk's ideal group commit: events arrive at --rate, each round writes all that
    /// arrived to one file and calls fdatasync once; latency from arrival to that fsync.
    Disk(DiskArgs),
    /// Measure every way of delivery (brokered, direct, datagram, request/response, chains)
    /// against this machine's limits, print the table and rank the ways.
    Matrix(Box<crate::matrix::MatrixArgs>),
    /// The receiving process the matrix starts: a direct member that timestamps arrivals.
    #[command(hide = true)]
    Member(MemberArgs),
}

/// The producer's configuration, shared by every producing bench.
#[derive(Debug, Clone, clap::Args)]
pub struct ProducerArgs {
    /// `acks`: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// librdkafka `enable.idempotence` (only with acks=all; off otherwise).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub idempotent: bool,
    /// librdkafka `max.in.flight.requests.per.connection` (at most 5 when idempotent).
    #[arg(long, default_value_t = 5)]
    pub in_flight_max: u32,
    /// librdkafka `linger.ms`.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// librdkafka `compression.type`: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
}

impl ProducerArgs {
    pub fn settings(&self) -> ProducerSettings {
        ProducerSettings {
            acks: self.acks.clone(),
            idempotent: self.idempotent && matches!(self.acks.as_str(), "all" | "-1"),
            in_flight_max: self.in_flight_max,
            linger_ms: self.linger_ms,
            compression: self.compression.clone(),
        }
    }
}

/// Options of `herald bench produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Topic to produce to; created with `--partitions` if it does not exist.
    #[arg(long, default_value = "herald-bench")]
    pub topic: String,
    /// Partitions of the topic when the bench creates it.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Messages to produce, across all producers.
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Concurrent producer clients, each on its own thread.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Offered load in messages per second across all producers; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    #[command(flatten)]
    pub producer: ProducerArgs,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Options of `herald bench consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(long, default_value = "herald-bench")]
    pub topic: String,
    /// Stop after this many messages even if the topic holds more (0: read to the end).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Give up when no message arrives for this long.
    #[arg(long, default_value_t = 10_000)]
    pub idle_timeout_ms: u64,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Send raw Fetch requests that never decode a record (what the broker alone serves)
    /// instead of reading through librdkafka's consumer.
    #[arg(long)]
    pub raw: bool,
    /// With --raw: the broker's process id on this machine, to report its CPU seconds per GiB.
    #[arg(long, requires = "raw")]
    pub broker_pid: Option<u32>,
}

/// Options of `herald bench end-to-end`.
#[derive(Debug, clap::Args)]
pub struct EndToEndArgs {
    /// Topic to use; created with one partition if it does not exist.
    #[arg(long, default_value = "herald-bench-e2e")]
    pub topic: String,
    /// Offered load, messages per second.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// How long to produce.
    #[arg(long, default_value_t = 5_000)]
    pub duration_ms: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    #[command(flatten)]
    pub producer: ProducerArgs,
}

/// Options of `herald bench disk`.
#[derive(Debug, clap::Args)]
pub struct DiskArgs {
    /// Directory on the filesystem to measure (the broker's data directory's, typically).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Events arriving per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Bytes per event.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// How long events arrive.
    #[arg(long, default_value_t = 5_000)]
    pub duration_ms: u64,
    /// Instead of the group commit, the sequential write bandwidth: this many MiB in 1 MiB
    /// writes to a new file and one final `fdatasync` (what `dd conv=fdatasync` measures).
    #[arg(long)]
    pub sequential_mib: Option<u64>,
}

/// Options of the hidden `herald bench member`.
#[derive(Debug, clap::Args)]
pub struct MemberArgs {
    #[arg(long)]
    pub topic: String,
    #[arg(long)]
    pub group: String,
    #[arg(long)]
    pub bind: std::net::SocketAddr,
    #[arg(long, default_value_t = 1024)]
    pub capacity: u32,
    /// The next service of a chain.
    #[arg(long, requires = "next_topic")]
    pub next: Option<std::net::SocketAddr>,
    #[arg(long)]
    pub next_topic: Option<String>,
    /// How this service calls the next: event (ack, then publish) or request (answer after it).
    #[arg(long, default_value = "event")]
    pub chain: String,
    /// Handling time of each event or request, microseconds.
    #[arg(long, default_value_t = 0)]
    pub delay_us: u64,
    #[arg(long)]
    pub drop_every: Option<u64>,
}

/// What one bench run measured; printed as text or JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub topic: String,
    /// The producer's configuration, for runs that produce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producer: Option<ProducerSettings>,
    pub messages: u64,
    pub failed: u64,
    pub value_bytes: u64,
    pub seconds: f64,
    pub msgs_per_s: f64,
    pub mib_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// How late the load generator handed messages over (open-loop runs) and whether it kept
    /// its schedule; a run that fell behind measured the tool, not the broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator_lag: Option<Latency>,
    pub generator_behind: bool,
    pub generator_cpu_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Raw consume: the broker's CPU seconds per GiB it served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_cpu_s_per_gib: Option<f64>,
}

/// Runs a bench subcommand.
pub fn run(global: &Global, command: BenchCommand) -> Result<(), CliError> {
    // `-X` and `--client-config` (security settings) reach every client the benches make.
    herald_bench::kafka::set_client_properties(crate::client::client_properties(global));
    let report = match command {
        BenchCommand::Produce(args) => produce(global, &args)?,
        BenchCommand::Consume(args) => consume(global, &args)?,
        BenchCommand::EndToEnd(args) => end_to_end(global, &args)?,
        BenchCommand::Disk(args) => return disk(global.output, &args),
        BenchCommand::Matrix(args) => return crate::matrix::run(global, *args),
        BenchCommand::Member(args) => return member(args),
    };
    print_report(global.output, &report)?;
    if report.failed > 0 {
        return Err(CliError::NotAcknowledged(format!(
            "{} of {} messages were not acknowledged (first error: {})",
            report.failed,
            report.messages + report.failed,
            report.first_error.as_deref().unwrap_or("unknown")
        )));
    }
    Ok(())
}

fn print_report(output: Output, report: &Report) -> Result<(), CliError> {
    match output {
        Output::Json => output::print_json(report, false).context("printing the report")?,
        Output::Table => {
            let mut headers = vec![
                "mode",
                "topic",
                "messages",
                "failed",
                "value_bytes",
                "seconds",
                "MiB/s",
                "msgs/s",
            ];
            let mut row = vec![
                report.mode.to_string(),
                report.topic.clone(),
                report.messages.to_string(),
                report.failed.to_string(),
                report.value_bytes.to_string(),
                format!("{:.2}", report.seconds),
                format!("{:.1}", report.mib_per_s),
                format!("{:.0}", report.msgs_per_s),
            ];
            if let Some(latency) = &report.latency {
                headers.extend(["p50_us", "p99_us", "p99.9_us", "max_us"]);
                row.extend([
                    latency.p50_us.to_string(),
                    latency.p99_us.to_string(),
                    latency.p999_us.to_string(),
                    latency.max_us.to_string(),
                ]);
            }
            output::print_table(&headers, &[row]);
            if let Some(cpu) = report.broker_cpu_s_per_gib {
                println!("broker: {cpu:.2} CPU s per GiB served");
            }
            if let Some(producer) = &report.producer {
                println!("producer: {}", producer.describe());
            }
            if let Some(lag) = report.generator_lag {
                println!(
                    "load generator: lag p50 {} µs p99 {} µs, {:.2} CPU s{}",
                    lag.p50_us,
                    lag.p99_us,
                    report.generator_cpu_s,
                    if report.generator_behind {
                        "; FELL BEHIND its schedule: the latency above measures the tool"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    Ok(())
}

fn progress(total: u64, quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = format!("{what} {{bar:40}} {{pos}}/{{len}} {{per_sec}} eta {{eta}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

fn produce(global: &Global, args: &ProduceArgs) -> Result<Report, CliError> {
    if args.producers == 0 {
        return Err(CliError::Usage("--producers must be at least 1".into()));
    }
    let settings = args.producer.settings();
    settings.check()?;
    kafka::create_topic(&global.bootstrap, &args.topic, args.partitions, &[])
        .map_err(|e| CliError::Unreachable(format!("cannot create topic {}: {e}", args.topic)))?;
    let rate_schedule = Schedule {
        rate: args.rate,
        duration: Duration::from_secs_f64(args.count as f64 / args.rate.max(1) as f64),
        count_max: args.count,
    };
    let spec = ProduceSpec {
        bootstrap: global.bootstrap.clone(),
        topic: args.topic.clone(),
        settings: settings.clone(),
        value_bytes: args.size,
        producers: args.producers,
        schedule: rate_schedule,
        keys: 0,
    };
    let recorder = Arc::new(Recorder::new()?);
    let bar = progress(args.count, args.quiet, "produce");
    // The bar follows acknowledgements, not sends: an unacknowledged message is not done.
    let outcome = std::thread::scope(|scope| {
        let run = scope.spawn(|| kafka::produce(&spec, &recorder));
        while !run.is_finished() {
            bar.set_position(recorder.finished());
            std::thread::sleep(Duration::from_millis(100));
        }
        run.join()
            .map_err(|_| CliError::Other(anyhow::anyhow!("the producer panicked")))
    })??;
    bar.finish_and_clear();
    let messages = outcome.delivered;
    let value_bytes = messages * args.size as u64;
    Ok(Report {
        mode: "produce",
        topic: args.topic.clone(),
        producer: Some(settings),
        messages,
        failed: outcome.failed,
        value_bytes,
        seconds: outcome.seconds,
        msgs_per_s: outcome.per_s(),
        mib_per_s: value_bytes as f64 / outcome.seconds.max(1e-9) / (1024.0 * 1024.0),
        latency: outcome.latency,
        generator_lag: (args.rate > 0).then_some(outcome.generated.lag).flatten(),
        generator_behind: outcome.generated.behind,
        generator_cpu_s: outcome.generated.cpu_s,
        first_error: outcome.first_error,
        broker_cpu_s_per_gib: None,
    })
}

fn end_to_end(global: &Global, args: &EndToEndArgs) -> Result<Report, CliError> {
    let settings = args.producer.settings();
    settings.check()?;
    kafka::create_topic(&global.bootstrap, &args.topic, 1, &[])?;
    let consumer = kafka::GroupConsumer::start(
        &global.bootstrap,
        &args.topic,
        &format!("{}-group", args.topic),
    )?;
    let spec = ProduceSpec {
        bootstrap: global.bootstrap.clone(),
        topic: args.topic.clone(),
        settings: settings.clone(),
        value_bytes: args.size,
        producers: 1,
        schedule: Schedule {
            rate: args.rate,
            duration: Duration::from_millis(args.duration_ms),
            count_max: 0,
        },
        keys: 16,
    };
    let outcome = kafka::end_to_end(&spec, &consumer)?;
    let value_bytes = outcome.delivered * args.size as u64;
    Ok(Report {
        mode: "end-to-end",
        topic: args.topic.clone(),
        producer: Some(settings),
        messages: outcome.delivered,
        failed: outcome.failed,
        value_bytes,
        seconds: outcome.seconds,
        msgs_per_s: outcome.per_s(),
        mib_per_s: value_bytes as f64 / outcome.seconds.max(1e-9) / (1024.0 * 1024.0),
        latency: outcome.latency,
        generator_lag: outcome.generated.lag,
        generator_behind: outcome.generated.behind,
        generator_cpu_s: outcome.generated.cpu_s,
        first_error: outcome.first_error,
        broker_cpu_s_per_gib: None,
    })
}

fn disk(output: Output, args: &DiskArgs) -> Result<(), CliError> {
    if let Some(mib) = args.sequential_mib {
        let report = herald_bench::limits::disk_sequential(&args.dir, mib * 1024 * 1024)?;
        match output {
            Output::Json => output::print_json(&report, false).context("printing the report")?,
            Output::Table => output::print_table(
                &["bytes", "write_bytes", "seconds", "MiB/s"],
                &[vec![
                    report.bytes.to_string(),
                    report.write_bytes.to_string(),
                    format!("{:.3}", report.seconds),
                    format!("{:.1}", report.mib_per_s),
                ]],
            ),
        }
        return Ok(());
    }
    let report = herald_bench::limits::disk_group_commit(
        &args.dir,
        args.size,
        args.rate,
        Duration::from_millis(args.duration_ms),
    )?;
    match output {
        Output::Json => output::print_json(&report, false).context("printing the report")?,
        Output::Table => {
            let l = report.latency;
            output::print_table(
                &[
                    "rate",
                    "size",
                    "events",
                    "fsyncs",
                    "events/fsync",
                    "p50_us",
                    "p99_us",
                    "p99.9_us",
                    "max_us",
                    "fsync_p50_us",
                    "fsync_p99_us",
                ],
                &[vec![
                    report.rate.to_string(),
                    report.event_bytes.to_string(),
                    report.events.to_string(),
                    report.fsyncs.to_string(),
                    format!("{:.1}", report.events_per_fsync),
                    l.p50_us.to_string(),
                    l.p99_us.to_string(),
                    l.p999_us.to_string(),
                    l.max_us.to_string(),
                    report.fsync.p50_us.to_string(),
                    report.fsync.p99_us.to_string(),
                ]],
            );
            if report.generator_behind {
                println!("the load generator fell behind its schedule: latency measures the tool");
            }
        }
    }
    Ok(())
}

fn member(args: MemberArgs) -> Result<(), CliError> {
    let chain = match args.chain.as_str() {
        "event" => herald_bench::member::Chain::Event,
        "request" => herald_bench::member::Chain::Request,
        other => {
            return Err(CliError::Usage(format!(
                "--chain is event or request, not {other:?}"
            )));
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(herald_bench::member::run(
        herald_bench::member::MemberArgs {
            topic: args.topic,
            group: args.group,
            bind: args.bind,
            capacity: args.capacity,
            next: args.next,
            next_topic: args.next_topic,
            chain,
            delay: Duration::from_micros(args.delay_us),
            drop_every: args.drop_every,
        },
    ));
    // The stdin reader blocks in a thread of the runtime's pool until a line or the end of
    // input; waiting for it would keep a member stopped by SIGTERM alive.
    runtime.shutdown_background();
    result.map_err(CliError::from)
}

fn consume(global: &Global, args: &ConsumeArgs) -> Result<Report, CliError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &global.bootstrap);
    crate::client::apply_client_properties(global, &mut config);
    let consumer: BaseConsumer = config
        // Partitions are assigned directly; the group id only satisfies librdkafka.
        .set("group.id", "herald-bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "8388608")
        .set("queued.max.messages.kbytes", "262144")
        .create()
        .context("creating a consumer")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(&args.topic), timeout)
        .map_err(|error| {
            CliError::Unreachable(format!("cannot reach {}: {error}", global.bootstrap))
        })?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|topic| topic.name() == args.topic && topic.error().is_none())
        .flat_map(|topic| topic.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(CliError::NotFound(format!(
            "topic {} not found",
            args.topic
        )));
    }
    let mut assignment = TopicPartitionList::new();
    let mut available: u64 = 0;
    let mut ranges = Vec::new();
    for &partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&args.topic, partition, timeout)
            .map_err(|error| CliError::Unreachable(format!("listing offsets: {error}")))?;
        available += u64::try_from(high - low).unwrap_or(0);
        ranges.push((partition, low, high));
        assignment
            .add_partition_offset(&args.topic, partition, Offset::Beginning)
            .context("building the assignment")?;
    }
    let target = if args.count == 0 {
        available
    } else {
        args.count.min(available)
    };
    if args.raw {
        let leader = metadata
            .brokers()
            .first()
            .map(|b| format!("{}:{}", b.host(), b.port()))
            .unwrap_or_else(|| global.bootstrap.clone());
        let raw = herald_bench::fetch::raw_fetch(&leader, &args.topic, &ranges, args.broker_pid)?;
        return Ok(Report {
            mode: "consume-raw",
            topic: args.topic.clone(),
            producer: None,
            messages: raw.records,
            failed: 0,
            value_bytes: raw.bytes,
            seconds: raw.seconds,
            msgs_per_s: raw.records as f64 / raw.seconds.max(1e-9),
            mib_per_s: raw.mib_per_s,
            latency: None,
            generator_lag: None,
            generator_behind: false,
            generator_cpu_s: 0.0,
            first_error: None,
            broker_cpu_s_per_gib: raw.broker_cpu_s_per_gib,
        });
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;

    let bar = progress(target, args.quiet, "consume");
    let idle_timeout = Duration::from_millis(args.idle_timeout_ms);
    let start = Instant::now();
    let mut last_message = Instant::now();
    let mut messages: u64 = 0;
    let mut value_bytes: u64 = 0;
    while messages < target {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                messages += 1;
                value_bytes += message.payload_len() as u64;
                last_message = Instant::now();
                if messages % 4096 == 0 {
                    bar.set_position(messages);
                }
            }
            Some(Err(error)) => {
                return Err(CliError::Refused(format!("fetch failed: {error}")));
            }
            None if last_message.elapsed() > idle_timeout => {
                return Err(CliError::TimedOut(format!(
                    "no message for {} ms after {messages} of {target}",
                    args.idle_timeout_ms
                )));
            }
            None => {}
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(Report {
        mode: "consume",
        topic: args.topic.clone(),
        producer: None,
        messages,
        failed: 0,
        value_bytes,
        seconds,
        msgs_per_s: messages as f64 / seconds,
        mib_per_s: value_bytes as f64 / seconds / (1024.0 * 1024.0),
        latency: None,
        generator_lag: None,
        generator_behind: false,
        generator_cpu_s: 0.0,
        first_error: None,
        broker_cpu_s_per_gib: None,
    })
}
