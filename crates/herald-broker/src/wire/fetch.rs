//! Fetch: serves stored record batches as they are (no re-encoding), with Kafka's long poll:
//! the response waits up to `max_wait_ms` until `min_bytes` are available, woken by appends to
//! the partitions asked for (not by polling).
//!
//! Limits follow Kafka (KIP-74): `partition_max_bytes` per partition and `max_bytes` per
//! response, except that the first batch of the first partition with data is returned whole
//! so that a consumer can always make progress.
//!
//! With `fetch_sendfile` (the default) the batches are not read: each partition's answer is a
//! range of its segment file, which the connection's writer sends with `sendfile(2)` (see
//! `segmented` for how the response is encoded around it). A range pins its segment file (and,
//! if retention deletes it meanwhile, its disk space) until it is sent; what it holds is
//! bounded by the partition's share of the fetch's `max_bytes`, or one larger first batch.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_storage::{FileRange, RangedBatches, ReadError};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, ResponseKind};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::warn;
use uuid::Uuid;

use super::errors::{self, code};
use super::produce::count_records;
use super::segmented::placeholder;
use super::{Reply, WithFiles, topic_name};
use crate::Core;
use crate::problem::Problem;
use crate::stats::Counters;
use crate::topics::Partition;

/// Fetch v7+ sessions (KIP-227) are not kept; a client asking to continue one is told so.
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;

/// Ranges shorter than this are read into the response instead of sent by `sendfile`: for a
/// few batches the flush and the extra system call before them cost more than the copy.
const SENDFILE_BYTES_MIN: u64 = 16 * 1024;

/// One partition asked for, resolved against the topics.
struct Wanted {
    index: i32,
    partition: Option<Arc<Partition>>,
    fetch_offset: i64,
    partition_max_bytes: usize,
}

struct WantedTopic {
    name: String,
    id: Uuid,
    partitions: Vec<Wanted>,
}

/// The limits of one fetch.
#[derive(Clone, Copy)]
struct Limits {
    min_bytes: usize,
    max_bytes: usize,
}

pub(crate) fn fetch(core: &Arc<Core>, request: FetchRequest, version: i16) -> Reply {
    if request.session_id != 0 || request.session_epoch > 0 {
        let response = FetchResponse::default()
            .with_error_code(FETCH_SESSION_ID_NOT_FOUND)
            .with_session_id(0);
        return Reply::Ready(Box::new(ResponseKind::Fetch(response)));
    }
    let topics: Vec<WantedTopic> = request
        .topics
        .into_iter()
        .map(|wanted| {
            let topic = if version >= 13 {
                core.topics.get_by_id(wanted.topic_id)
            } else {
                core.topics.get(wanted.topic.as_str())
            };
            WantedTopic {
                name: wanted.topic.as_str().to_string(),
                id: wanted.topic_id,
                partitions: wanted
                    .partitions
                    .into_iter()
                    .map(|partition| Wanted {
                        index: partition.partition,
                        partition: topic
                            .as_ref()
                            .and_then(|topic| topic.partition(partition.partition)),
                        fetch_offset: partition.fetch_offset,
                        partition_max_bytes: usize::try_from(partition.partition_max_bytes)
                            .unwrap_or(0),
                    })
                    .collect(),
            }
        })
        .collect();
    let limits = Limits {
        min_bytes: usize::try_from(request.min_bytes).unwrap_or(0),
        max_bytes: usize::try_from(request.max_bytes)
            .unwrap_or(0)
            .min(core.config.fetch_response_bytes_max as usize),
    };
    let max_wait_ms = u64::try_from(request.max_wait_ms)
        .unwrap_or(0)
        .min(core.config.fetch_wait_ms_max);
    // Subscribe before the first read so that an append in between still wakes us.
    let mut wakers: Vec<watch::Receiver<u64>> = topics
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .filter_map(|wanted| {
            wanted
                .partition
                .as_ref()
                .map(|partition| partition.subscribe())
        })
        .collect();
    let committed = (request.isolation_level == 1).then(|| core.clone());
    let sendfile = core.config.fetch_sendfile;
    let first = read_all(&topics, limits, version, committed.as_deref(), sendfile);
    if first.bytes >= limits.min_bytes || first.any_error || max_wait_ms == 0 || wakers.is_empty() {
        return Reply::ReadyWithFiles(Box::new(finish(core, first)));
    }
    // The first read's ranges are not sent: drop them now rather than hold their files open
    // through the wait.
    drop(first);
    let core = core.clone();
    Reply::LaterWithFiles(Box::pin(async move {
        let deadline = Instant::now() + Duration::from_millis(max_wait_ms);
        let mut stopping = core.stopping.clone();
        loop {
            let changed = futures::future::select_all(
                wakers.iter_mut().map(|waker| Box::pin(waker.changed())),
            );
            let timed_out = tokio::select! {
                _ = changed => false,
                _ = tokio::time::sleep_until(deadline) => true,
                _ = stopping.wait_for(|stopping| *stopping) => true,
            };
            // Mark what we are about to read as seen first, so an append during the read
            // wakes the next wait instead of being lost.
            for waker in &mut wakers {
                waker.borrow_and_update();
            }
            let next = read_all(&topics, limits, version, committed.as_deref(), sendfile);
            if timed_out || next.bytes >= limits.min_bytes || next.any_error {
                break finish(&core, next);
            }
        }
    }))
}

/// One read of every wanted partition.
struct Read {
    response: FetchResponse,
    /// The ranges behind the response's placeholder records, in response order.
    files: Vec<FileRange>,
    /// Record bytes and records per topic of `response.responses`, in the same order.
    traffic: Vec<(u64, u64)>,
    /// Record bytes in the response.
    bytes: usize,
    /// Whether any partition has an error (which ends a long poll at once, as in Kafka).
    any_error: bool,
}

/// The response of the read that answers the request, counted as traffic out.
fn finish(core: &Core, read: Read) -> WithFiles {
    for (topic, &(bytes, records)) in read.response.responses.iter().zip(&read.traffic) {
        if bytes == 0 {
            continue;
        }
        Counters::add(&core.counters.fetched_bytes, bytes);
        Counters::add(&core.counters.fetched_records, records);
        // Fetch v13+ names topics by id only.
        let known = if topic.topic.is_empty() {
            core.topics.get_by_id(topic.topic_id)
        } else {
            core.topics.get(topic.topic.as_str())
        };
        if let Some(known) = &known {
            known.traffic.record_out(bytes, records);
        }
    }
    WithFiles {
        body: ResponseKind::Fetch(read.response),
        files: read.files,
    }
}

/// A partition's batches as the response's records and their record count: bytes as read,
/// or a placeholder for a range sent from its file (pushed onto `files`); short ranges, and
/// any range no placeholder can stand for, are read into memory.
fn records_of(
    batches: RangedBatches,
    files: &mut Vec<FileRange>,
) -> Result<(Bytes, u64), ReadError> {
    match batches {
        RangedBatches::Bytes(bytes) => {
            let records = count_records(&bytes);
            Ok((bytes, records))
        }
        RangedBatches::File(range) => {
            let records = range.records();
            let stand_in = (range.len() >= SENDFILE_BYTES_MIN)
                .then(|| placeholder(range.len()))
                .flatten();
            match stand_in {
                Some(stand_in) => {
                    files.push(range);
                    Ok((stand_in, records))
                }
                None => Ok((range.to_bytes().map_err(ReadError::Io)?, records)),
            }
        }
    }
}

/// Reads every wanted partition once: as file ranges when `sendfile`, else into memory.
/// With `committed` (isolation_level=1, read_committed), reads stop at the last stable offset
/// and each partition's answer lists the aborted transactions in the range returned.
fn read_all(
    topics: &[WantedTopic],
    limits: Limits,
    version: i16,
    committed: Option<&Core>,
    sendfile: bool,
) -> Read {
    let mut budget = limits.max_bytes;
    let mut bytes = 0usize;
    let mut any_error = false;
    let mut files = Vec::new();
    let mut traffic = Vec::with_capacity(topics.len());
    let mut responses = Vec::with_capacity(topics.len());
    for topic in topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        let (mut topic_bytes, mut topic_records) = (0u64, 0u64);
        for wanted in &topic.partitions {
            let mut data = PartitionData::default().with_partition_index(wanted.index);
            let Some(partition) = &wanted.partition else {
                any_error = true;
                partitions.push(data.with_error_code(if version >= 13 {
                    errors::UNKNOWN_TOPIC_ID
                } else {
                    errors::UNKNOWN_TOPIC_OR_PARTITION
                }));
                continue;
            };
            let Ok(offset) = u64::try_from(wanted.fetch_offset) else {
                any_error = true;
                let offsets = partition.log.offsets();
                partitions.push(
                    data.with_error_code(code(Problem::OffsetOutOfRange))
                        .with_high_watermark(as_i64(offsets.visible_end))
                        .with_last_stable_offset(as_i64(offsets.visible_end))
                        .with_log_start_offset(as_i64(offsets.log_start)),
                );
                continue;
            };
            let max = wanted.partition_max_bytes.min(budget);
            // KIP-74: the first batch of the response goes out whole, whatever its size.
            let at_least_one = bytes == 0;
            // The last stable offset: below the first open transaction on the partition.
            let stable = committed
                .and_then(|core| core.transactions.first_unstable(&topic.name, wanted.index));
            let stable_end = stable.unwrap_or(u64::MAX);
            let outcome = if max == 0 && !at_least_one {
                let offsets = partition.log.offsets();
                Ok((Bytes::new(), 0, offsets.visible_end, offsets.log_start))
            } else if sendfile {
                partition
                    .log
                    .read_visible_below_ranged(offset, stable_end, max, at_least_one)
                    .and_then(|read| {
                        let (records, count) = records_of(read.batches, &mut files)?;
                        Ok((records, count, read.high_watermark, read.log_start))
                    })
            } else {
                partition
                    .log
                    .read_visible_below(offset, stable_end, max, at_least_one)
                    .map(|read| {
                        let count = count_records(&read.batches);
                        (read.batches, count, read.high_watermark, read.log_start)
                    })
            };
            match outcome {
                Ok((batches, records, read_end, log_start)) => {
                    bytes += batches.len();
                    budget = budget.saturating_sub(batches.len());
                    topic_bytes += batches.len() as u64;
                    topic_records += records;
                    let high_watermark = partition.log.offsets().visible_end.max(read_end);
                    let last_stable = stable.map_or(high_watermark, |s| s.min(high_watermark));
                    if let Some(core) = committed {
                        let aborted = core
                            .transactions
                            .aborted_between(&topic.name, wanted.index, offset, last_stable)
                            .into_iter()
                            .map(|range| {
                                AbortedTransaction::default()
                                    .with_producer_id(ProducerId(range.producer_id))
                                    .with_first_offset(as_i64(range.first_offset))
                            })
                            .collect();
                        data = data.with_aborted_transactions(Some(aborted));
                    }
                    data = data
                        .with_high_watermark(as_i64(high_watermark))
                        .with_last_stable_offset(as_i64(last_stable))
                        .with_log_start_offset(as_i64(log_start))
                        .with_records(Some(batches));
                }
                Err(ReadError::OffsetOutOfRange {
                    log_start,
                    high_watermark,
                }) => {
                    any_error = true;
                    data = data
                        .with_error_code(code(Problem::OffsetOutOfRange))
                        .with_high_watermark(as_i64(high_watermark))
                        .with_last_stable_offset(as_i64(high_watermark))
                        .with_log_start_offset(as_i64(log_start));
                }
                Err(error) => {
                    any_error = true;
                    // A resource limit is logged and counted as one (the consumer retries
                    // KAFKA_STORAGE_ERROR, which suits a limit that may clear); anything else
                    // is a failing read.
                    let limited =
                        matches!(&error, ReadError::Io(io) if partition.read_hit_limit(io));
                    if !limited {
                        warn!(topic = %topic.name, partition = wanted.index, %error, "read failed");
                    }
                    data = data.with_error_code(code(Problem::StorageError));
                }
            }
            partitions.push(data);
        }
        traffic.push((topic_bytes, topic_records));
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(topic_name(&topic.name))
                .with_topic_id(topic.id)
                .with_partitions(partitions),
        );
    }
    Read {
        response: FetchResponse::default().with_responses(responses),
        files,
        traffic,
        bytes,
        any_error,
    }
}

fn as_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}
