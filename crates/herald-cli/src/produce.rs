//! `herald produce`: sends one event per input line to a topic through librdkafka and reports
//! what the broker acknowledged.
//!
//! Input is read a line at a time and at most `--in-flight-max` events wait for their
//! acknowledgement, so memory stays bounded however large the input is.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use serde::Serialize;

use crate::client;
use crate::output::{print_json, print_table};
use crate::{CliError, Global, Output};

/// Input at least this large (bytes) gets a progress bar, when stderr is a terminal.
const PROGRESS_BYTES_MIN: u64 = 1024 * 1024;

/// How long to wait between retries when librdkafka's queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(50);

/// `herald produce TOPIC`
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  echo hello | herald produce greetings
  herald produce orders --file orders.txt --key-separator : --header source=import
  seq 1 1000000 | herald produce numbers --acks 1 --compression zstd")]
pub struct ProduceArgs {
    /// The topic to write to.
    topic: String,
    /// Read events from this file instead of standard input.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value (a line without SEP has no key).
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header added to every event, e.g. `source=import`; repeat for more.
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = client::parse_key_value)]
    headers: Vec<(String, String)>,
    /// Write every event to this partition instead of choosing by key.
    #[arg(long, value_name = "N")]
    partition: Option<i32>,
    /// Acknowledgement asked of the broker: 0 (none, offsets unknown), 1 (leader stored it) or
    /// all (every in-sync replica stored it).
    #[arg(long, value_enum, default_value_t = Acks::All)]
    acks: Acks,
    /// Compression of the record batches sent.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compression: Compression,
    /// Most events sent but not yet acknowledged; bounds the memory used.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    in_flight_max: u32,
    /// Longest line accepted, in bytes (key, separator and value together).
    #[arg(long, default_value_t = 1024 * 1024)]
    line_bytes_max: usize,
    /// How long one event may wait for its acknowledgement, retries included, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    delivery_timeout_ms: u64,
}

/// `--acks`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Acks {
    #[value(name = "0")]
    None,
    #[value(name = "1")]
    Leader,
    #[value(name = "all")]
    All,
}

impl Acks {
    fn setting(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

/// `--compression`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn setting(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// What the broker acknowledged for one partition.
#[derive(Debug, Default, Clone, Serialize)]
struct PartitionTally {
    partition: i32,
    events: u64,
    /// First and last offset acknowledged; null with `--acks 0`, where the broker returns none.
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

/// Acknowledgements and failures, filled in by librdkafka's delivery callback.
#[derive(Debug, Default)]
struct Tally {
    acked: u64,
    acked_bytes: u64,
    failed: u64,
    /// The first failure's reason, which usually explains the rest.
    first_failure: Option<String>,
    partitions: BTreeMap<i32, PartitionTally>,
}

/// Producer context that counts each delivery report.
struct Reports {
    tally: Mutex<Tally>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut tally = self.tally.lock();
        match result {
            Ok(message) => {
                tally.acked += 1;
                let bytes = message.payload_len() + message.key().map_or(0, <[u8]>::len);
                tally.acked_bytes += bytes as u64;
                let partition = message.partition();
                let entry = tally.partitions.entry(partition).or_default();
                entry.partition = partition;
                entry.events += 1;
                // librdkafka reports a negative offset when the broker returned none (acks=0).
                if message.offset() >= 0 {
                    let offset = message.offset();
                    entry.first_offset = Some(entry.first_offset.map_or(offset, |o| o.min(offset)));
                    entry.last_offset = Some(entry.last_offset.map_or(offset, |o| o.max(offset)));
                }
            }
            Err((error, _)) => {
                tally.failed += 1;
                if tally.first_failure.is_none() {
                    tally.first_failure = Some(error.to_string());
                }
            }
        }
    }
}

/// The summary printed at the end (`--output json`: one document).
#[derive(Debug, Serialize)]
struct Summary {
    topic: String,
    /// Events read from the input.
    sent: u64,
    /// Events the broker acknowledged.
    acknowledged: u64,
    /// Key and value bytes of the acknowledged events.
    bytes: u64,
    /// Events that were not acknowledged.
    failed: u64,
    failure: Option<String>,
    partitions: Vec<PartitionTally>,
}

/// Runs `herald produce`.
pub fn run(global: &Global, args: ProduceArgs) -> Result<(), CliError> {
    let metadata_client = client::metadata_client(global)?;
    let metadata = client::fetch_metadata(global, &metadata_client, Some(&args.topic))?;
    if let Some(partition) = args.partition {
        let exists = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == args.topic)
            .flat_map(|t| t.partitions())
            .any(|p| p.id() == partition);
        if !exists {
            return Err(CliError::NotFound(format!(
                "partition {partition} of topic {} does not exist",
                args.topic
            )));
        }
    }
    drop(metadata_client);

    let (input, input_bytes): (Box<dyn Read>, Option<u64>) = match &args.file {
        Some(path) => {
            let file = File::open(path).map_err(|error| {
                CliError::Usage(format!("cannot open --file {}: {error}", path.display()))
            })?;
            let size = file.metadata().map(|m| m.len()).ok();
            (Box::new(file), size)
        }
        None => (Box::new(std::io::stdin().lock()), None),
    };
    let input_is_terminal = args.file.is_none() && std::io::stdin().is_terminal();
    let progress = progress_bar(input_is_terminal, input_bytes);

    let mut config = client::base_config(global);
    config
        .set("acks", args.acks.setting())
        .set("compression.codec", args.compression.setting())
        .set(
            "queue.buffering.max.messages",
            args.in_flight_max.to_string(),
        )
        // Bytes waiting in librdkafka are bounded too; room for two of the longest lines, so one
        // long line can never wait for space that cannot come.
        .set(
            "queue.buffering.max.kbytes",
            in_flight_kbytes_max(args.line_bytes_max),
        )
        .set("message.timeout.ms", args.delivery_timeout_ms.to_string())
        .set("linger.ms", "5");
    let producer: BaseProducer<Reports> = client::create_with_context(
        &config,
        Reports {
            tally: Mutex::new(Tally::default()),
        },
    )?;

    let mut headers = OwnedHeaders::new_with_capacity(args.headers.len());
    for (key, value) in &args.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }

    let started = Instant::now();
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    let mut sent: u64 = 0;
    let mut read_bytes: u64 = 0;
    // Why reading stopped early, if it did. Events already sent are still waited for and
    // reported before this error is, so the user knows what reached the broker.
    let mut stopped: Option<CliError> = None;
    loop {
        line.clear();
        let n = match (&mut reader)
            .take(args.line_bytes_max as u64 + 2)
            .read_until(b'\n', &mut line)
        {
            Ok(n) => n,
            Err(error) => {
                stopped = Some(CliError::Other(anyhow::anyhow!(
                    "reading the input after {sent} events: {error}"
                )));
                break;
            }
        };
        if n == 0 {
            break;
        }
        read_bytes += n as u64;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if line.len() > args.line_bytes_max {
            stopped = Some(CliError::Usage(format!(
                "line {} is longer than --line-bytes-max {} bytes; the {sent} events before it \
                 were sent (see the summary), the rest of the input was not",
                sent + 1,
                args.line_bytes_max
            )));
            break;
        }
        let (key, value) = split_line(&line, args.key_separator.as_deref());
        let mut record: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(&args.topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = args.partition {
            record = record.partition(partition);
        }
        if !args.headers.is_empty() {
            record = record.headers(headers.clone());
        }
        // A full queue means `in_flight_max` events await acknowledgement: serve delivery
        // reports until there is room, which is what bounds memory.
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(QUEUE_FULL_WAIT);
                }
                Err((error, _)) => {
                    // Refused before leaving this process (too large for the client's limit,
                    // say): counted as not acknowledged, like a refusal by the broker.
                    let mut tally = producer.context().tally.lock();
                    tally.failed += 1;
                    if tally.first_failure.is_none() {
                        tally.first_failure = Some(format!("event {}: {error}", sent + 1));
                    }
                    break;
                }
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
        if let Some(bar) = &progress {
            bar.update(read_bytes, sent);
        }
    }
    // Every event either gets acknowledged or fails by its delivery timeout, so waiting a little
    // longer than that always ends with a report for each.
    let flush_timeout = Duration::from_millis(args.delivery_timeout_ms) + Duration::from_secs(5);
    if let Err(error) = producer.flush(flush_timeout) {
        tracing::debug!(%error, "flush did not complete");
    }
    if let Some(bar) = &progress {
        bar.finish();
    }
    let elapsed = started.elapsed();
    let summary = {
        let tally = producer.context().tally.lock();
        let unreported = sent.saturating_sub(tally.acked + tally.failed);
        Summary {
            topic: args.topic.clone(),
            sent,
            acknowledged: tally.acked,
            bytes: tally.acked_bytes,
            failed: tally.failed + unreported,
            failure: tally.first_failure.clone().or_else(|| {
                (unreported > 0).then(|| "no acknowledgement before the timeout".to_string())
            }),
            partitions: tally.partitions.values().cloned().collect(),
        }
    };
    print_summary(global, &summary, elapsed, args.acks)?;
    if let Some(error) = stopped {
        return Err(error);
    }
    if summary.failed > 0 {
        return Err(CliError::NotAcknowledged(format!(
            "{} of {} events were not acknowledged by {}: {}",
            summary.failed,
            summary.sent,
            global.bootstrap,
            summary.failure.as_deref().unwrap_or("unknown reason")
        )));
    }
    Ok(())
}

/// Most bytes waiting for acknowledgement, in KiB as librdkafka takes them.
fn in_flight_kbytes_max(line_bytes_max: usize) -> String {
    const IN_FLIGHT_KBYTES_MIN: usize = 64 * 1024;
    (line_bytes_max.saturating_mul(2) / 1024 + 1)
        .max(IN_FLIGHT_KBYTES_MIN)
        .to_string()
}

/// Splits a line into key and value at the first separator.
fn split_line<'a>(line: &'a [u8], separator: Option<&str>) -> (Option<&'a [u8]>, &'a [u8]) {
    let Some(separator) = separator.map(str::as_bytes).filter(|s| !s.is_empty()) else {
        return (None, line);
    };
    match line
        .windows(separator.len())
        .position(|window| window == separator)
    {
        Some(at) => (Some(&line[..at]), &line[at + separator.len()..]),
        None => (None, line),
    }
}

fn print_summary(
    global: &Global,
    summary: &Summary,
    elapsed: Duration,
    acks: Acks,
) -> Result<(), CliError> {
    match global.output {
        Output::Json => {
            print_json(summary, false).map_err(|error| CliError::Other(error.into()))?;
        }
        Output::Table => {
            let seconds = elapsed.as_secs_f64().max(1e-3);
            // With --acks 0 the broker confirms nothing, so "produced" would claim too much.
            let verb = if acks == Acks::None {
                "sent (unacknowledged, --acks 0)"
            } else {
                "produced"
            };
            println!(
                "{verb} {} of {} events ({} bytes) to {} in {:.2} s ({:.0} events/s)",
                summary.acknowledged,
                summary.sent,
                summary.bytes,
                summary.topic,
                seconds,
                summary.acknowledged as f64 / seconds
            );
            if !summary.partitions.is_empty() {
                let offset = |o: Option<i64>| o.map_or_else(|| "-".to_string(), |o| o.to_string());
                let rows: Vec<Vec<String>> = summary
                    .partitions
                    .iter()
                    .map(|p| {
                        vec![
                            p.partition.to_string(),
                            p.events.to_string(),
                            offset(p.first_offset),
                            offset(p.last_offset),
                        ]
                    })
                    .collect();
                print_table(&["PARTITION", "EVENTS", "FIRST", "LAST"], &rows);
            }
        }
    }
    Ok(())
}

/// The progress display: a byte bar for a file of known size, a counter with rate for a pipe.
struct Progress {
    bar: ProgressBar,
    /// For a pipe, the bar appears only once this many bytes were read ("the input is large").
    show_after_bytes: Option<u64>,
}

impl Progress {
    fn update(&self, read_bytes: u64, sent: u64) {
        if let Some(threshold) = self.show_after_bytes {
            if read_bytes >= threshold && self.bar.is_hidden() {
                self.bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
        self.bar.set_position(read_bytes);
        self.bar.set_message(format!("{sent} events"));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A progress bar only where someone can see it: stderr is a terminal and the input is not
/// typed by hand.
fn progress_bar(input_is_terminal: bool, input_bytes: Option<u64>) -> Option<Progress> {
    if input_is_terminal || !std::io::stderr().is_terminal() {
        return None;
    }
    match input_bytes {
        Some(total) if total >= PROGRESS_BYTES_MIN => {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            Some(Progress {
                bar,
                show_after_bytes: None,
            })
        }
        Some(_) => None,
        None => {
            let bar = ProgressBar::hidden();
            let style = ProgressStyle::with_template(
                "{spinner} {bytes} read {binary_bytes_per_sec} {msg} {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            Some(Progress {
                bar,
                show_after_bytes: Some(PROGRESS_BYTES_MIN),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator() {
        assert_eq!(
            split_line(b"k:v:w", Some(":")),
            (Some(&b"k"[..]), &b"v:w"[..])
        );
        assert_eq!(split_line(b"plain", Some(":")), (None, &b"plain"[..]));
        assert_eq!(
            split_line(b"a::b", Some("::")),
            (Some(&b"a"[..]), &b"b"[..])
        );
        assert_eq!(split_line(b"k:v", None), (None, &b"k:v"[..]));
    }
}
