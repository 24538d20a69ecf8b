//! `herald consume`: prints a topic's events, one per line, through a librdkafka consumer:
//! from a chosen position, optionally as a consumer group member that commits what it printed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, Timestamp, TopicPartitionList};
use serde::Serialize;

use crate::client::{self, REQUEST_TIMEOUT};
use crate::{CliError, Global, Output};

/// How long one poll waits for an event before checking the stop conditions again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Most bytes librdkafka fetches ahead of the output, in KiB.
const PREFETCH_KBYTES_MAX: u32 = 16 * 1024;

/// How often printed events are committed when consuming as a group.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// `herald consume TOPIC`
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  herald consume orders --from-beginning --max-messages 10
  herald consume orders --group billing                # follow, commit what was printed
  herald consume orders --partition 2 --offset -5 --format '{offset} {key}={value}'
  herald consume orders --from-time 2026-01-31T12:00:00Z --output json | jq .value")]
pub struct ConsumeArgs {
    /// The topic to read.
    topic: String,
    #[command(flatten)]
    start: Start,
    /// Read only this partition (default: every partition).
    #[arg(long, value_name = "N")]
    partition: Option<i32>,
    /// Read as a member of this consumer group and commit the offsets of printed events. Without
    /// --partition, --offset or --from-time the group's committed offsets are the start (and
    /// --from-beginning applies only where the group has none).
    #[arg(long, value_name = "G")]
    group: Option<String>,
    /// Stop after printing N events (exit status 0).
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,
    /// Keep waiting for new events at the end of the topic. The default without --max-messages;
    /// with it, reading stops at the end of every partition unless --follow is given. Ctrl-C
    /// (or SIGTERM) ends following cleanly: with --group, what was printed is committed.
    #[arg(long)]
    follow: bool,
    /// How each event is printed. Fields: {key} {value} {headers} {partition} {offset}
    /// {timestamp} {topic}; escapes: \n \t \\; {{ and }} print braces. Ignored with
    /// --output json, which prints one object per event.
    #[arg(long, default_value = "{value}")]
    format: String,
}

/// Where reading starts: at most one of these; the default is the end (new events only).
#[derive(Debug, clap::Args)]
#[group(multiple = false)]
struct Start {
    /// Start at the first event still stored.
    #[arg(long)]
    from_beginning: bool,
    /// Start at this offset; a negative N starts N events before the end of each partition.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    offset: Option<i64>,
    /// Start at the first event whose timestamp is at or after this time (RFC 3339, e.g.
    /// 2026-01-31T12:00:00Z; without a zone it is UTC; a date alone means its midnight).
    #[arg(long, value_name = "ISO8601", value_parser = parse_time)]
    from_time: Option<i64>,
}

/// Parses an ISO 8601 time into milliseconds since the Unix epoch.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(time) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(time.and_utc().timestamp_millis());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(time) = date.and_hms_opt(0, 0, 0) {
            return Ok(time.and_utc().timestamp_millis());
        }
    }
    Err(format!(
        "expected an ISO 8601 time such as 2026-01-31T12:00:00Z, got {text:?}"
    ))
}

/// One piece of a `--format` template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Key,
    Value,
    Headers,
    Partition,
    Offset,
    Timestamp,
    Topic,
}

/// Parses a `--format` template into pieces once, so printing does no parsing.
fn parse_template(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => text.push('\n'),
                Some('t') => text.push('\t'),
                Some('\\') => text.push('\\'),
                Some(other) => {
                    text.push('\\');
                    text.push(other);
                }
                None => text.push('\\'),
            },
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("unclosed {{ in --format {template:?}")),
                    }
                }
                let piece = match name.as_str() {
                    "key" => Piece::Key,
                    "value" => Piece::Value,
                    "headers" => Piece::Headers,
                    "partition" => Piece::Partition,
                    "offset" => Piece::Offset,
                    "timestamp" => Piece::Timestamp,
                    "topic" => Piece::Topic,
                    other => {
                        return Err(format!(
                            "unknown field {{{other}}} in --format; known: {{key}} {{value}} \
                             {{headers}} {{partition}} {{offset}} {{timestamp}} {{topic}}"
                        ));
                    }
                };
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(piece);
            }
            other => text.push(other),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// An event as `--output json` prints it: one object per line.
#[derive(Debug, Serialize)]
struct EventJson<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    /// Milliseconds since the Unix epoch, or null when the broker gave none.
    timestamp: Option<i64>,
    /// Key and value as UTF-8 text (invalid bytes replaced), null when absent.
    key: Option<String>,
    value: Option<String>,
    headers: Vec<HeaderJson>,
}

#[derive(Debug, Serialize)]
struct HeaderJson {
    key: String,
    value: Option<String>,
}

fn text(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
}

fn timestamp_ms(message: &BorrowedMessage<'_>) -> Option<i64> {
    match message.timestamp() {
        Timestamp::NotAvailable => None,
        Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => Some(ms),
    }
}

fn headers(message: &BorrowedMessage<'_>) -> Vec<HeaderJson> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| HeaderJson {
                    key: h.key.to_string(),
                    value: text(h.value),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes one event as the template says.
fn render(out: &mut impl Write, pieces: &[Piece], m: &BorrowedMessage<'_>) -> std::io::Result<()> {
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.write_all(text.as_bytes())?,
            Piece::Key => out.write_all(m.key().unwrap_or_default())?,
            Piece::Value => out.write_all(m.payload().unwrap_or_default())?,
            Piece::Headers => {
                let list: Vec<String> = headers(m)
                    .into_iter()
                    .map(|h| format!("{}={}", h.key, h.value.unwrap_or_default()))
                    .collect();
                out.write_all(list.join(",").as_bytes())?;
            }
            Piece::Partition => write!(out, "{}", m.partition())?,
            Piece::Offset => write!(out, "{}", m.offset())?,
            Piece::Timestamp => match timestamp_ms(m)
                .and_then(DateTime::<Utc>::from_timestamp_millis)
            {
                Some(time) => {
                    out.write_all(time.to_rfc3339_opts(SecondsFormat::Millis, true).as_bytes())?;
                }
                None => out.write_all(b"-")?,
            },
            Piece::Topic => out.write_all(m.topic().as_bytes())?,
        }
    }
    out.write_all(b"\n")
}

fn write_json(out: &mut impl Write, m: &BorrowedMessage<'_>) -> std::io::Result<()> {
    let event = EventJson {
        topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: timestamp_ms(m),
        key: text(m.key()),
        value: text(m.payload()),
        headers: headers(m),
    };
    serde_json::to_writer(&mut *out, &event)?;
    out.write_all(b"\n")
}

/// Runs `herald consume`.
pub fn run(global: &Global, args: ConsumeArgs) -> Result<(), CliError> {
    let pieces = parse_template(&args.format).map_err(CliError::Usage)?;
    let follow = args.follow || args.max_messages.is_none();

    let mut config = client::base_config(global);
    config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // librdkafka prefetches ahead of what is printed; cap the queue and each fetch (the
        // defaults are 64 MiB and 50 MiB). The broker still returns at least one whole batch.
        .set(
            "queued.max.messages.kbytes",
            PREFETCH_KBYTES_MAX.to_string(),
        )
        .set(
            "fetch.max.bytes",
            (PREFETCH_KBYTES_MAX * 1024 / 2).to_string(),
        )
        .set(
            "auto.offset.reset",
            if args.start.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        );
    match &args.group {
        Some(group) => config.set("group.id", group),
        // librdkafka refuses to assign partitions to a consumer without a group id; a unique
        // one that never commits or joins keeps a plain read invisible to real groups.
        None => config.set("group.id", format!("herald-cli-{}", uuid::Uuid::new_v4())),
    };
    let consumer: BaseConsumer = client::create(&config)?;
    let metadata = client::fetch_metadata(global, &consumer, Some(&args.topic))?;
    let mut partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == args.topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions.sort_unstable();
    if let Some(wanted) = args.partition {
        if !partitions.contains(&wanted) {
            return Err(CliError::NotFound(format!(
                "partition {wanted} of topic {} does not exist (it has {})",
                args.topic,
                partitions.len()
            )));
        }
        partitions = vec![wanted];
    }

    let explicit_position =
        args.partition.is_some() || args.start.offset.is_some() || args.start.from_time.is_some();
    if args.group.is_some() && !explicit_position {
        // Let the group coordinator hand out partitions, so several consumers share the topic.
        consumer
            .subscribe(&[&args.topic])
            .map_err(|error| client::kafka_error(global, "joining the group", error))?;
    } else {
        let assignment = start_positions(global, &consumer, &args, &partitions)?;
        consumer
            .assign(&assignment)
            .map_err(|error| client::kafka_error(global, "assigning partitions", error))?;
    }

    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut printed: u64 = 0;
    let mut uncommitted = false;
    let mut last_commit = Instant::now();
    // Partitions whose end was reached and that have had no event since.
    let mut at_end: BTreeSet<i32> = BTreeSet::new();
    let mut last_transport_error: Option<String> = None;
    let stop = client::stop_on_signal()?;
    let result = loop {
        if args.max_messages.is_some_and(|max| printed >= max) {
            break Ok(());
        }
        // Ctrl-C is how a followed topic is left: end like a reached limit, so what was printed
        // is committed.
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        if uncommitted && last_commit.elapsed() >= COMMIT_INTERVAL {
            // Synchronous, like the final commit: an asynchronous commit still in flight could
            // land after a later one and move the group back.
            match commit(&consumer, &mut out, CommitMode::Sync) {
                Ok(None) => {}
                Ok(Some(error)) => eprintln!("warning: committing offsets failed: {error}"),
                Err(error) => break Err(error),
            }
            uncommitted = false;
            last_commit = Instant::now();
        }
        match consumer.poll(POLL_INTERVAL) {
            None => {
                // Nothing new: make what was printed visible before waiting again.
                if let Err(error) = out.flush() {
                    break Err(error);
                }
            }
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                let written = match global.output {
                    Output::Json => write_json(&mut out, &message),
                    Output::Table => render(&mut out, &pieces, &message),
                };
                if let Err(error) = written {
                    break Err(error);
                }
                printed += 1;
                if args.group.is_some() {
                    // Stored offsets are committed only after the output is flushed, so a
                    // committed event has always been printed.
                    if let Err(error) = consumer.store_offset_from_message(&message) {
                        tracing::debug!(%error, "storing the offset failed");
                    }
                    uncommitted = true;
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
                if !follow && every_partition_at_end(&consumer, &at_end) {
                    break Ok(());
                }
            }
            Some(Err(error)) => {
                if let Some(code) = error.rdkafka_error_code() {
                    let mapped = client::topic_code_error(global, &args.topic, "reading", code);
                    match mapped {
                        CliError::NotFound(_) => return Err(mapped),
                        CliError::Unreachable(_) | CliError::TimedOut(_) => {
                            // librdkafka reconnects by itself; say so once, keep reading.
                            let text = error.to_string();
                            if last_transport_error.as_deref() != Some(&text) {
                                eprintln!("warning: {text} (retrying)");
                                last_transport_error = Some(text);
                            }
                        }
                        other => return Err(other),
                    }
                } else {
                    return Err(client::kafka_error(global, "reading", error));
                }
            }
        }
    };
    match result {
        Ok(()) => {
            if uncommitted {
                let failed = finish_output(commit(&consumer, &mut out, CommitMode::Sync))?;
                if let Some(error) = failed {
                    return Err(client::kafka_error(
                        global,
                        "committing the offsets of the printed events",
                        error,
                    ));
                }
            } else {
                finish_output(out.flush())?;
            }
            Ok(())
        }
        Err(error) => finish_output(Err(error)),
    }
}

/// A closed pipe (`herald consume t | head`) is a normal end, not an error.
fn finish_output<T: Default>(result: std::io::Result<T>) -> Result<T, CliError> {
    match result {
        Ok(value) => Ok(value),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(T::default()),
        Err(error) => Err(CliError::Other(anyhow::anyhow!(
            "writing the output: {error}"
        ))),
    }
}

/// Flushes the output, then commits the stored offsets of the events just printed. A failed
/// commit is returned apart from output errors: it is a warning while reading goes on and an
/// error at the end.
fn commit(
    consumer: &BaseConsumer,
    out: &mut impl Write,
    mode: CommitMode,
) -> std::io::Result<Option<KafkaError>> {
    out.flush()?;
    Ok(match consumer.commit_consumer_state(mode) {
        Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::error::RDKafkaErrorCode::NoOffset)) => {
            None
        }
        Err(error) => Some(error),
    })
}

/// True once every assigned partition has reported its end since its last event.
fn every_partition_at_end(consumer: &BaseConsumer, at_end: &BTreeSet<i32>) -> bool {
    match consumer.assignment() {
        Ok(assignment) => {
            let assigned = assignment.elements();
            !assigned.is_empty() && assigned.iter().all(|e| at_end.contains(&e.partition()))
        }
        Err(_) => false,
    }
}

/// The starting offset of each partition, as `--from-beginning`, `--offset`, `--from-time` or
/// the group's committed offsets (falling back to the end) say.
fn start_positions(
    global: &Global,
    consumer: &BaseConsumer,
    args: &ConsumeArgs,
    partitions: &[i32],
) -> Result<TopicPartitionList, CliError> {
    let mut list = TopicPartitionList::with_capacity(partitions.len());
    let start = if args.start.from_beginning {
        Offset::Beginning
    } else if let Some(offset) = args.start.offset {
        if offset < 0 {
            Offset::OffsetTail(offset.unsigned_abs() as i64)
        } else {
            Offset::Offset(offset)
        }
    } else if let Some(time_ms) = args.start.from_time {
        let mut query = TopicPartitionList::with_capacity(partitions.len());
        for &p in partitions {
            query
                .add_partition_offset(&args.topic, p, Offset::Offset(time_ms))
                .map_err(|error| client::kafka_error(global, "looking up offsets", error))?;
        }
        let found = consumer
            .offsets_for_times(query, REQUEST_TIMEOUT)
            .map_err(|error| client::kafka_error(global, "looking up offsets by time", error))?;
        let by_partition: BTreeMap<i32, Offset> = found
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        for &p in partitions {
            // No event at or after that time: start at the end and wait for new ones.
            let offset = match by_partition.get(&p) {
                Some(Offset::Offset(o)) if *o >= 0 => Offset::Offset(*o),
                _ => Offset::End,
            };
            list.add_partition_offset(&args.topic, p, offset)
                .map_err(|error| client::kafka_error(global, "assigning partitions", error))?;
        }
        return Ok(list);
    } else if args.group.is_some() {
        Offset::Stored
    } else {
        Offset::End
    };
    for &p in partitions {
        list.add_partition_offset(&args.topic, p, start)
            .map_err(|error| client::kafka_error(global, "assigning partitions", error))?;
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_fields_escapes_and_braces() {
        let pieces = parse_template("{partition}\\t{key}={value} {{x}}\\n").unwrap();
        assert_eq!(
            pieces,
            vec![
                Piece::Partition,
                Piece::Text("\t".into()),
                Piece::Key,
                Piece::Text("=".into()),
                Piece::Value,
                Piece::Text(" {x}\n".into()),
            ]
        );
        assert!(parse_template("{nope}").is_err());
        assert!(parse_template("{value").is_err());
    }

    #[test]
    fn times_parse_with_and_without_zone() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_time("1970-01-01T01:00:01+01:00"), Ok(1000));
        assert_eq!(parse_time("1970-01-01T00:00:01.5"), Ok(1500));
        assert_eq!(parse_time("1970-01-02"), Ok(86_400_000));
        assert!(parse_time("yesterday").is_err());
    }
}
