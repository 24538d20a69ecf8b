//! `herald bench produce|consume`: whole-system load against any Kafka-protocol broker through
//! librdkafka, with HdrHistogram latencies and throughput, so figures compare with other brokers.
//!
//! Producing is open-loop when `--rate` is set: message `i` is due at `start + i / rate` and its
//! latency counts from that due time, so a stalled broker shows up as latency instead of silently
//! lowering the offered load (coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;

use crate::{CliError, Global, Output, output};

/// Largest value a benchmark message may carry; larger values belong to a different test.
const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Highest latency the histograms record (one minute); slower deliveries are clamped to it.
const LATENCY_US_MAX: u64 = 60_000_000;

/// `herald bench`: load generators for the broker.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Produce `--count` messages of `--size` bytes and report throughput and ack latency.
    Produce(ProduceArgs),
    /// Read a topic from its earliest offsets to its current end and report throughput.
    Consume(ConsumeArgs),
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
    /// librdkafka `linger.ms`.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// `acks`: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// librdkafka `compression.type`: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
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
}

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// What one bench run measured; printed as text or JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub topic: String,
    pub messages: u64,
    pub failed: u64,
    pub value_bytes: u64,
    pub seconds: f64,
    pub msgs_per_s: f64,
    pub mib_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Runs a bench subcommand.
pub fn run(global: &Global, command: BenchCommand) -> Result<(), CliError> {
    let report = match command {
        BenchCommand::Produce(args) => produce(global, &args)?,
        BenchCommand::Consume(args) => consume(global, &args)?,
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
        }
    }
    Ok(())
}

/// Collects delivery reports of one producer: its latency histogram and the shared counters.
struct Deliveries {
    /// The bench's time origin; each message's opaque is its due time in ns after it.
    start: Instant,
    histogram: Mutex<Histogram<u64>>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, due_ns: usize) {
        match result {
            Ok(_) => {
                let due = self.start + Duration::from_nanos(due_ns as u64);
                let latency_us = Instant::now().saturating_duration_since(due).as_micros() as u64;
                if let Ok(mut histogram) = self.histogram.lock() {
                    histogram.saturating_record(latency_us.min(LATENCY_US_MAX));
                }
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| error.to_string());
                }
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
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

fn create_topic(global: &Global, topic: &str, partitions: i32) -> Result<(), CliError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &global.bootstrap);
    crate::client::apply_client_properties(global, &mut config);
    let admin: AdminClient<DefaultClientContext> =
        config.create().context("creating the admin client")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime for the admin client")?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = runtime
        .block_on(admin.create_topics([&new_topic], &options))
        .map_err(|error| {
            CliError::Unreachable(format!(
                "cannot create topic {topic} on {}: {error}",
                global.bootstrap
            ))
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(CliError::Refused(format!(
                    "cannot create topic {name}: {code}"
                )));
            }
        }
    }
    Ok(())
}

fn produce(global: &Global, args: &ProduceArgs) -> Result<Report, CliError> {
    if args.size > VALUE_BYTES_MAX {
        return Err(CliError::Usage(format!(
            "--size {} is larger than the bench's limit of {VALUE_BYTES_MAX} bytes",
            args.size
        )));
    }
    if args.producers == 0 {
        return Err(CliError::Usage("--producers must be at least 1".into()));
    }
    create_topic(global, &args.topic, args.partitions)?;

    // Pseudo-random bytes so that compressed runs compress like real payloads rather than zeros.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let value: Arc<Vec<u8>> = Arc::new(
        (0..args.size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state & 0xff) as u8
            })
            .collect(),
    );

    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let bar = progress(args.count, args.quiet, "produce");
    let start = Instant::now();
    let producers = u64::from(args.producers);
    let mut threads = Vec::new();
    for index in 0..producers {
        // Spread the remainder so that the counts add up to exactly `--count`.
        let count = args.count / producers + u64::from(index < args.count % producers);
        let rate = args.rate as f64 / producers as f64;
        let context = Deliveries {
            start,
            histogram: Mutex::new(
                Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).context("latency histogram")?,
            ),
            acked: acked.clone(),
            failed: failed.clone(),
            first_error: Mutex::new(None),
        };
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &global.bootstrap)
            .set("linger.ms", args.linger_ms.to_string())
            .set("acks", &args.acks)
            .set("compression.type", &args.compression)
            .set("queue.buffering.max.kbytes", "262144")
            .set("message.max.bytes", (VALUE_BYTES_MAX + 4096).to_string());
        crate::client::apply_client_properties(global, &mut config);
        let producer: BaseProducer<Deliveries> = config
            .create_with_context(context)
            .context("creating a producer")?;
        let topic = args.topic.clone();
        let value = value.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("bench-producer-{index}"))
                .spawn(move || produce_loop(producer, &topic, &value, count, rate, start))
                .context("starting a producer thread")?,
        );
    }

    // The bar follows acknowledgements, not sends: an unacknowledged message is not done.
    while threads.iter().any(|thread| !thread.is_finished()) {
        bar.set_position(acked.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();

    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).context("latency histogram")?;
    let mut first_error = None;
    for thread in threads {
        let context = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
        if let Ok(own) = context.histogram.lock() {
            histogram.add(&*own).context("merging latency histograms")?;
        }
        if first_error.is_none() {
            first_error = context.first_error.lock().ok().and_then(|e| e.clone());
        }
    }
    let messages = acked.load(Ordering::Relaxed);
    let value_bytes = messages * args.size as u64;
    let seconds = elapsed.as_secs_f64();
    Ok(Report {
        mode: "produce",
        topic: args.topic.clone(),
        messages,
        failed: failed.load(Ordering::Relaxed),
        value_bytes,
        seconds,
        msgs_per_s: messages as f64 / seconds,
        mib_per_s: value_bytes as f64 / seconds / (1024.0 * 1024.0),
        latency: Some(Latency {
            p50_us: histogram.value_at_quantile(0.5),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }),
        first_error,
    })
}

/// Sends `count` messages from one producer, paced to `rate` msgs/s when it is positive, then
/// waits for every delivery report and hands back the context holding them.
fn produce_loop(
    producer: BaseProducer<Deliveries>,
    topic: &str,
    value: &[u8],
    count: u64,
    rate: f64,
    start: Instant,
) -> Result<Arc<Deliveries>, CliError> {
    let mut sent: u64 = 0;
    while sent < count {
        let now = start.elapsed();
        let due_ns = if rate > 0.0 {
            // Send everything that is due by now; sleep briefly when nothing is.
            let due = Duration::from_secs_f64(sent as f64 / rate);
            if due > now {
                producer.poll(Duration::ZERO);
                std::thread::sleep((due - now).min(Duration::from_millis(1)));
                continue;
            }
            due.as_nanos() as usize
        } else {
            now.as_nanos() as usize
        };
        let mut record: BaseRecord<'_, (), [u8], usize> =
            BaseRecord::with_opaque_to(topic, due_ns).payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: serve delivery reports until there is room.
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
                Err((error, _)) => {
                    return Err(CliError::Refused(format!("cannot produce: {error}")));
                }
            }
        }
        sent += 1;
        if sent % 64 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    // Flush waits for every outstanding delivery report (acked or failed after the message
    // timeout), so the counters are final afterwards.
    producer
        .flush(Duration::from_secs(600))
        .map_err(|error| CliError::TimedOut(format!("waiting for acknowledgements: {error}")))?;
    Ok(producer.context().clone())
}

fn consume(global: &Global, args: &ConsumeArgs) -> Result<Report, CliError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &global.bootstrap)
        // Partitions are assigned directly; the group id only satisfies librdkafka.
        .set("group.id", "herald-bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "8388608")
        .set("queued.max.messages.kbytes", "262144");
    crate::client::apply_client_properties(global, &mut config);
    let consumer: BaseConsumer = config.create().context("creating a consumer")?;
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
    for &partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&args.topic, partition, timeout)
            .map_err(|error| CliError::Unreachable(format!("listing offsets: {error}")))?;
        available += u64::try_from(high - low).unwrap_or(0);
        assignment
            .add_partition_offset(&args.topic, partition, Offset::Beginning)
            .context("building the assignment")?;
    }
    let target = if args.count == 0 {
        available
    } else {
        args.count.min(available)
    };
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
        messages,
        failed: 0,
        value_bytes,
        seconds,
        msgs_per_s: messages as f64 / seconds,
        mib_per_s: value_bytes as f64 / seconds / (1024.0 * 1024.0),
        latency: None,
        first_error: None,
    })
}
