//! `herald group`: list, describe, reset the offsets of, and delete consumer groups on any
//! Kafka-protocol broker, through librdkafka's consumer and admin APIs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clap::Subcommand;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::groups::GroupInfo;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::output::{print_json, print_table};
use crate::{CliError, Global, Output};

/// How long one broker request may take before the command gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `herald group ...`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups with their state and member count.
    List,
    /// Show a group's members and assignment, and per partition its committed offset, the end
    /// offset and the lag between them.
    Describe {
        /// The group id.
        group: String,
    },
    /// Move a group's committed offsets for one topic. Refused while the group has members.
    ResetOffsets(ResetArgs),
    /// Delete a group and its committed offsets. Refused while the group has members.
    Delete {
        /// The group id.
        group: String,
    },
}

/// Arguments of `herald group reset-offsets`.
#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    /// The group id.
    group: String,
    /// The topic whose offsets move (every partition of it).
    #[arg(long)]
    topic: String,
    #[command(flatten)]
    target: ResetTarget,
    /// Print the new offsets without committing them.
    #[arg(long)]
    dry_run: bool,
}

/// Where the offsets move to: exactly one of these.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct ResetTarget {
    /// The first offset still stored.
    #[arg(long)]
    to_earliest: bool,
    /// The end of each partition (skip everything stored).
    #[arg(long)]
    to_latest: bool,
    /// This offset, clamped to what is stored.
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// The first offset whose timestamp is at or after this time (RFC 3339, e.g.
    /// 2026-01-31T12:00:00Z; without a zone it is UTC).
    #[arg(long, value_name = "ISO8601")]
    to_datetime: Option<String>,
    /// The committed offset moved by N (negative to re-read), clamped to what is stored.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
}

/// Runs one `herald group` command.
pub fn run(global: &Global, command: GroupCommand) -> Result<(), CliError> {
    match command {
        GroupCommand::List => list(global),
        GroupCommand::Describe { group } => describe(global, &group),
        GroupCommand::ResetOffsets(args) => reset_offsets(global, &args),
        GroupCommand::Delete { group } => delete(global, &group),
    }
}

fn consumer(global: &Global, group: Option<&str>) -> Result<BaseConsumer, CliError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &global.bootstrap)
        .set("enable.auto.commit", "false")
        .set("log_level", "3");
    if let Some(group) = group {
        config.set("group.id", group);
    }
    config
        .create()
        .map_err(|error| CliError::Other(anyhow::anyhow!("creating a Kafka client: {error}")))
}

/// Maps a librdkafka error: transport failures are "unreachable", the rest "refused".
fn kafka_error(what: &str, global: &Global, error: KafkaError) -> CliError {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::CoordinatorNotAvailable,
        ) => CliError::Unreachable(format!(
            "{what}: cannot reach {}: {error}",
            global.bootstrap
        )),
        Some(RDKafkaErrorCode::GroupIdNotFound) => CliError::NotFound(format!("{what}: {error}")),
        _ => CliError::Refused(format!("{what}: {error}")),
    }
}

fn group_info(global: &Global, group: &str) -> Result<Option<GroupSummary>, CliError> {
    let list = consumer(global, None)?
        .fetch_group_list(Some(group), REQUEST_TIMEOUT)
        .map_err(|e| kafka_error("describing the group", global, e))?;
    Ok(list
        .groups()
        .iter()
        .find(|g| g.name() == group && g.state() != "Dead")
        .map(summarize))
}

#[derive(Debug, Serialize)]
struct GroupSummary {
    group: String,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberSummary>,
}

#[derive(Debug, Serialize)]
struct MemberSummary {
    member_id: String,
    client_id: String,
    client_host: String,
    /// topic -> partitions, decoded from the consumer protocol assignment.
    assignment: BTreeMap<String, Vec<i32>>,
}

fn summarize(g: &GroupInfo) -> GroupSummary {
    GroupSummary {
        group: g.name().to_string(),
        state: g.state().to_string(),
        protocol_type: g.protocol_type().to_string(),
        protocol: g.protocol().to_string(),
        members: g
            .members()
            .iter()
            .map(|m| MemberSummary {
                member_id: m.id().to_string(),
                client_id: m.client_id().to_string(),
                client_host: m.client_host().to_string(),
                assignment: m
                    .assignment()
                    .and_then(decode_assignment)
                    .unwrap_or_default(),
            })
            .collect(),
    }
}

/// Decodes a ConsumerProtocolAssignment (any version): version i16, then an array of
/// (topic string, partitions i32 array); user data after it is ignored.
fn decode_assignment(bytes: &[u8]) -> Option<BTreeMap<String, Vec<i32>>> {
    let mut buf = bytes;
    let mut take = |n: usize| -> Option<&[u8]> {
        if buf.len() < n {
            return None;
        }
        let (head, tail) = buf.split_at(n);
        buf = tail;
        Some(head)
    };
    let mut out = BTreeMap::new();
    if take(2).is_none() {
        return Some(out);
    }
    let topics = i32::from_be_bytes(take(4)?.try_into().ok()?);
    for _ in 0..topics.max(0) {
        let len = usize::try_from(i16::from_be_bytes(take(2)?.try_into().ok()?)).ok()?;
        let topic = String::from_utf8(take(len)?.to_vec()).ok()?;
        let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
        let mut partitions = Vec::new();
        for _ in 0..count.max(0) {
            partitions.push(i32::from_be_bytes(take(4)?.try_into().ok()?));
        }
        partitions.sort_unstable();
        out.insert(topic, partitions);
    }
    Some(out)
}

fn list(global: &Global) -> Result<(), CliError> {
    let list = consumer(global, None)?
        .fetch_group_list(None, REQUEST_TIMEOUT)
        .map_err(|e| kafka_error("listing groups", global, e))?;
    let mut groups: Vec<GroupSummary> = list.groups().iter().map(summarize).collect();
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    match global.output {
        Output::Json => print_json(&groups, false).map_err(|e| CliError::Other(e.into()))?,
        Output::Table => print_table(
            &["GROUP", "STATE", "PROTOCOL", "MEMBERS"],
            &groups
                .iter()
                .map(|g| {
                    vec![
                        g.group.clone(),
                        g.state.clone(),
                        g.protocol.clone(),
                        g.members.len().to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct PartitionLag {
    topic: String,
    partition: i32,
    /// The committed offset, or null if the group has none for this partition.
    committed: Option<i64>,
    end: i64,
    /// end - committed, or null without a committed offset.
    lag: Option<i64>,
    /// The member the partition is assigned to, if any.
    member: Option<String>,
}

#[derive(Debug, Serialize)]
struct Description {
    #[serde(flatten)]
    group: GroupSummary,
    offsets: Vec<PartitionLag>,
}

/// Every partition of every non-internal topic, to ask the group which it has offsets for.
fn all_partitions(
    consumer: &BaseConsumer,
    global: &Global,
    topic: Option<&str>,
) -> Result<TopicPartitionList, CliError> {
    let metadata = consumer
        .fetch_metadata(topic, REQUEST_TIMEOUT)
        .map_err(|e| kafka_error("reading metadata", global, e))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        if t.name().starts_with("__") || t.error().is_some() {
            continue;
        }
        for p in t.partitions() {
            tpl.add_partition(t.name(), p.id());
        }
    }
    Ok(tpl)
}

fn committed(
    consumer: &BaseConsumer,
    global: &Global,
    tpl: TopicPartitionList,
) -> Result<BTreeMap<(String, i32), i64>, CliError> {
    if tpl.count() == 0 {
        return Ok(BTreeMap::new());
    }
    let committed = consumer
        .committed_offsets(tpl, REQUEST_TIMEOUT)
        .map_err(|e| kafka_error("fetching committed offsets", global, e))?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

fn describe(global: &Global, group: &str) -> Result<(), CliError> {
    let Some(summary) = group_info(global, group)? else {
        return Err(CliError::NotFound(format!("group {group} does not exist")));
    };
    let consumer = consumer(global, Some(group))?;
    let tpl = all_partitions(&consumer, global, None)?;
    let every: Vec<(String, i32)> = tpl
        .elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect();
    let committed = committed(&consumer, global, tpl)?;
    let mut owners: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &summary.members {
        for (topic, partitions) in &m.assignment {
            for p in partitions {
                owners.insert((topic.clone(), *p), m.member_id.clone());
            }
        }
    }
    // Every partition of every topic the group reads or has offsets for, so a partition it
    // never committed shows up (with no lag figure) instead of hiding.
    let topics: BTreeSet<&str> = committed
        .keys()
        .chain(owners.keys())
        .map(|(t, _)| t.as_str())
        .collect();
    let mut keys: Vec<(String, i32)> = every
        .iter()
        .filter(|(t, _)| topics.contains(t.as_str()))
        .cloned()
        .collect();
    keys.extend(committed.keys().cloned());
    keys.extend(owners.keys().cloned());
    keys.sort();
    keys.dedup();
    let mut offsets = Vec::new();
    for (topic, partition) in keys {
        let (_, end) = consumer
            .fetch_watermarks(&topic, partition, REQUEST_TIMEOUT)
            .map_err(|e| kafka_error("reading end offsets", global, e))?;
        let c = committed.get(&(topic.clone(), partition)).copied();
        offsets.push(PartitionLag {
            member: owners.get(&(topic.clone(), partition)).cloned(),
            lag: c.map(|c| (end - c).max(0)),
            committed: c,
            end,
            topic,
            partition,
        });
    }
    let description = Description {
        group: summary,
        offsets,
    };
    match global.output {
        Output::Json => print_json(&description, false).map_err(|e| CliError::Other(e.into()))?,
        Output::Table => {
            let g = &description.group;
            println!(
                "group {}  state {}  protocol {}  members {}",
                g.group,
                g.state,
                if g.protocol.is_empty() {
                    "-"
                } else {
                    &g.protocol
                },
                g.members.len()
            );
            if !g.members.is_empty() {
                println!();
                print_table(
                    &["MEMBER", "CLIENT", "HOST", "ASSIGNMENT"],
                    &g.members
                        .iter()
                        .map(|m| {
                            let assignment: Vec<String> = m
                                .assignment
                                .iter()
                                .map(|(t, ps)| {
                                    let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
                                    format!("{t}:{}", ps.join(","))
                                })
                                .collect();
                            vec![
                                m.member_id.clone(),
                                m.client_id.clone(),
                                m.client_host.clone(),
                                assignment.join(" "),
                            ]
                        })
                        .collect::<Vec<_>>(),
                );
            }
            println!();
            print_table(
                &["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER"],
                &description
                    .offsets
                    .iter()
                    .map(|o| {
                        vec![
                            o.topic.clone(),
                            o.partition.to_string(),
                            o.committed.map_or("-".into(), |c| c.to_string()),
                            o.end.to_string(),
                            o.lag.map_or("-".into(), |l| l.to_string()),
                            o.member.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
        }
    }
    Ok(())
}

fn parse_datetime(text: &str) -> Result<i64, CliError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(CliError::Usage(format!(
        "--to-datetime {text:?} is not an ISO 8601 time (e.g. 2026-01-31T12:00:00Z)"
    )))
}

#[derive(Debug, Serialize)]
struct ResetRow {
    topic: String,
    partition: i32,
    /// The committed offset before the reset, or null if there was none.
    current: Option<i64>,
    new: i64,
}

#[derive(Debug, Serialize)]
struct ResetReport {
    group: String,
    dry_run: bool,
    partitions: Vec<ResetRow>,
}

fn reset_offsets(global: &Global, args: &ResetArgs) -> Result<(), CliError> {
    let datetime_ms = args
        .target
        .to_datetime
        .as_deref()
        .map(parse_datetime)
        .transpose()?;
    if let Some(summary) = group_info(global, &args.group)? {
        if !summary.members.is_empty() {
            return Err(CliError::Refused(format!(
                "group {} has {} active member(s) (state {}); stop its consumers before resetting offsets",
                args.group,
                summary.members.len(),
                summary.state
            )));
        }
    }
    let consumer = consumer(global, Some(&args.group))?;
    let tpl = all_partitions(&consumer, global, Some(&args.topic))?;
    if tpl.count() == 0 {
        return Err(CliError::NotFound(format!(
            "topic {} does not exist",
            args.topic
        )));
    }
    let current = committed(&consumer, global, tpl.clone())?;
    let by_time = match datetime_ms {
        Some(ms) => {
            let mut query = TopicPartitionList::new();
            for e in tpl.elements() {
                query
                    .add_partition_offset(e.topic(), e.partition(), Offset::Offset(ms))
                    .map_err(|e| CliError::Other(e.into()))?;
            }
            let found = consumer
                .offsets_for_times(query, REQUEST_TIMEOUT)
                .map_err(|e| kafka_error("looking up offsets by time", global, e))?;
            found
                .elements()
                .iter()
                .map(|e| ((e.topic().to_string(), e.partition()), e.offset()))
                .collect::<BTreeMap<_, _>>()
        }
        None => BTreeMap::new(),
    };
    let mut rows = Vec::new();
    let mut commit = TopicPartitionList::new();
    for e in tpl.elements() {
        let key = (e.topic().to_string(), e.partition());
        let (low, high) = consumer
            .fetch_watermarks(e.topic(), e.partition(), REQUEST_TIMEOUT)
            .map_err(|e| kafka_error("reading partition offsets", global, e))?;
        let now = current.get(&key).copied();
        let t = &args.target;
        let new = if t.to_earliest {
            low
        } else if t.to_latest {
            high
        } else if let Some(n) = t.to_offset {
            n
        } else if let Some(n) = t.shift_by {
            now.unwrap_or(low).saturating_add(n)
        } else {
            // By time: the first offset at or after it; none means the end.
            match by_time.get(&key) {
                Some(Offset::Offset(o)) => *o,
                _ => high,
            }
        }
        .clamp(low, high);
        commit
            .add_partition_offset(e.topic(), e.partition(), Offset::Offset(new))
            .map_err(|e| CliError::Other(e.into()))?;
        rows.push(ResetRow {
            topic: key.0,
            partition: key.1,
            current: now,
            new,
        });
    }
    if !args.dry_run {
        consumer.commit(&commit, CommitMode::Sync).map_err(|e| {
            match e.rdkafka_error_code() {
                // The broker saw members join between our check and the commit.
                Some(RDKafkaErrorCode::UnknownMemberId | RDKafkaErrorCode::RebalanceInProgress) => {
                    CliError::Refused(format!(
                        "group {} has active members; stop its consumers before resetting offsets",
                        args.group
                    ))
                }
                _ => kafka_error("committing the new offsets", global, e),
            }
        })?;
    }
    let report = ResetReport {
        group: args.group.clone(),
        dry_run: args.dry_run,
        partitions: rows,
    };
    match global.output {
        Output::Json => print_json(&report, false).map_err(|e| CliError::Other(e.into()))?,
        Output::Table => {
            print_table(
                &["TOPIC", "PARTITION", "CURRENT", "NEW"],
                &report
                    .partitions
                    .iter()
                    .map(|r| {
                        vec![
                            r.topic.clone(),
                            r.partition.to_string(),
                            r.current.map_or("-".into(), |c| c.to_string()),
                            r.new.to_string(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
            if report.dry_run {
                println!("(dry run: nothing committed)");
            }
        }
    }
    Ok(())
}

fn delete(global: &Global, group: &str) -> Result<(), CliError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &global.bootstrap)
        .set("log_level", "3")
        .create()
        .map_err(|error| CliError::Other(anyhow::anyhow!("creating a Kafka client: {error}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
    let results = runtime
        .block_on(admin.delete_groups(&[group], &options))
        .map_err(|e| kafka_error("deleting the group", global, e))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {
                return Err(CliError::NotFound(format!("group {group} does not exist")));
            }
            Err((_, RDKafkaErrorCode::NonEmptyGroup)) => {
                return Err(CliError::Refused(format!(
                    "group {group} has active members; stop its consumers before deleting it"
                )));
            }
            Err((_, code)) => {
                return Err(CliError::Refused(format!("deleting group {group}: {code}")));
            }
        }
    }
    match global.output {
        Output::Json => print_json(
            &serde_json::json!({ "group": group, "deleted": true }),
            false,
        )
        .map_err(|e| CliError::Other(e.into()))?,
        Output::Table => println!("deleted group {group}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decodes_consumer_assignments() {
        let mut bytes = vec![
            0, 1, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 1,
        ];
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        let decoded = decode_assignment(&bytes).unwrap();
        assert_eq!(decoded["t"], vec![1, 3]);
        assert_eq!(decode_assignment(&[]).unwrap(), BTreeMap::new());
        assert_eq!(decode_assignment(&[0, 1, 0, 0, 0, 1, 0]), None);
    }

    #[test]
    fn parses_iso8601_times() {
        assert_eq!(parse_datetime("1970-01-01T00:00:01Z").unwrap(), 1_000);
        assert_eq!(parse_datetime("1970-01-01T01:00:00+01:00").unwrap(), 0);
        assert_eq!(parse_datetime("1970-01-02").unwrap(), 86_400_000);
        assert!(parse_datetime("yesterday").is_err());
    }
}
