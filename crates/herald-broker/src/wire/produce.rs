//! Produce: hands each partition's record batches, as received, to the storage log, and
//! answers according to `acks` (0: no answer, 1: after the append, -1/all: once the data is
//! durable under the topic's flush policy).
//!
//! Records are never decoded here: the storage validates batch headers and CRCs and assigns
//! offsets. The appends of one request happen in order before the next request of the same
//! connection is read; only the durability wait runs concurrently, so producers on many
//! connections share fsyncs (group commit).

use std::sync::Arc;

use herald_storage::{AppendError, FlushPolicy};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use tracing::debug;

use super::errors::{self, code};
use super::txn::txn_code;
use super::{Reply, str_bytes, topic_name};
use crate::Core;
use crate::group_commit;
use crate::problem::Problem;
use crate::stats::Counters;
use crate::topics::Partition;

/// `acks=-1`: wait for the data to be durable.
const ACKS_ALL: i16 = -1;

/// The storage error's category.
pub(crate) fn append_problem(error: &AppendError) -> Problem {
    match error {
        AppendError::CorruptBatch { .. } => Problem::CorruptMessage,
        AppendError::BatchTooLarge { .. } => Problem::MessageTooLarge,
        AppendError::InvalidTimestamp { .. } => Problem::InvalidTimestamp,
        AppendError::KeylessRecord { .. } => Problem::InvalidRecord,
        AppendError::Deleted => Problem::UnknownTopicOrPartition,
        AppendError::OutOfOrderSequence { .. } => Problem::OutOfOrderSequence,
        AppendError::ProducerFenced { .. } => Problem::ProducerFenced,
        AppendError::UnknownProducerId { .. } => Problem::UnknownProducerId,
        _ => Problem::StorageError,
    }
}

/// Records and batches in a run of concatenated record batches, read from their headers.
pub(crate) fn count_records(mut batches: &[u8]) -> u64 {
    // Batch header: base offset (8), batch length (4), ..., record count at byte 57.
    const RECORD_COUNT_AT: usize = 57;
    let mut records = 0u64;
    while batches.len() > RECORD_COUNT_AT + 4 {
        let length = i32::from_be_bytes([batches[8], batches[9], batches[10], batches[11]]);
        let count = i32::from_be_bytes([
            batches[RECORD_COUNT_AT],
            batches[RECORD_COUNT_AT + 1],
            batches[RECORD_COUNT_AT + 2],
            batches[RECORD_COUNT_AT + 3],
        ]);
        records += u64::try_from(count).unwrap_or(0);
        let Some(size) = usize::try_from(length).ok().map(|length| length + 12) else {
            break;
        };
        if size > batches.len() {
            break;
        }
        batches = &batches[size..];
    }
    records
}

/// Why a transactional producer may not append these batches to this partition, if it may
/// not: it must hold the current epoch of its transactional id and have added the partition
/// to its transaction. The producer id and epoch come from the first batch's header.
fn transactional_refusal(
    core: &Core,
    transactional_id: &str,
    topic: &str,
    partition: i32,
    records: Option<&[u8]>,
) -> Option<i16> {
    // Batch header: producer id (8) at byte 43, producer epoch (2) at byte 51.
    const PRODUCER_ID_AT: usize = 43;
    let records = records.unwrap_or_default();
    let Some(header) = records.get(PRODUCER_ID_AT..PRODUCER_ID_AT + 10) else {
        return Some(errors::CORRUPT_MESSAGE);
    };
    let mut pid = [0u8; 8];
    pid.copy_from_slice(&header[..8]);
    let producer_id = i64::from_be_bytes(pid);
    let producer_epoch = i16::from_be_bytes([header[8], header[9]]);
    match core.transactions.check_produce(
        transactional_id,
        producer_id,
        producer_epoch,
        topic,
        partition,
    ) {
        Ok(()) => None,
        Err(error) => {
            debug!(transactional_id, topic, partition, %error, "transactional produce refused");
            // Produce answers a fenced producer with INVALID_PRODUCER_EPOCH at every version.
            Some(txn_code(&error, false))
        }
    }
}

/// A partition whose data must reach the disk before the response (acks=all).
struct Durable {
    partition: Arc<Partition>,
    end_offset: u64,
    topic_at: usize,
    partition_at: usize,
}

pub(crate) fn produce(core: &Arc<Core>, request: ProduceRequest, version: i16) -> Reply {
    let acks = request.acks;
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut durable = Vec::new();
    for (topic_at, topic_data) in request.topic_data.into_iter().enumerate() {
        let name = topic_data.name.as_str().to_string();
        let topic = if !(-1..=1).contains(&acks) {
            Ok(None)
        } else {
            core.topics.get_or_create(&name)
        };
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for (partition_at, data) in topic_data.partition_data.into_iter().enumerate() {
            let mut response = PartitionProduceResponse::default()
                .with_index(data.index)
                .with_base_offset(-1);
            let refused_by_txn = request.transactional_id.as_ref().and_then(|id| {
                transactional_refusal(
                    core,
                    id.as_str(),
                    &name,
                    data.index,
                    data.records.as_deref(),
                )
            });
            let error_code = if let Some(refusal) = refused_by_txn {
                refusal
            } else if !(-1..=1).contains(&acks) {
                errors::INVALID_REQUIRED_ACKS
            } else {
                match &topic {
                    Err(error) => code(error.problem()),
                    Ok(None) => errors::UNKNOWN_TOPIC_OR_PARTITION,
                    Ok(Some(topic)) => match topic.partition(data.index) {
                        None => errors::UNKNOWN_TOPIC_OR_PARTITION,
                        Some(partition) => {
                            let records = data.records.unwrap_or_default();
                            match partition.append(&records) {
                                Ok(info) => {
                                    if info.duplicate {
                                        Counters::add(&core.counters.produced_batches_duplicate, 1);
                                    } else {
                                        Counters::add(
                                            &core.counters.produced_bytes,
                                            records.len() as u64,
                                        );
                                        let count = count_records(&records);
                                        Counters::add(&core.counters.produced_records, count);
                                        topic.traffic.record_in(records.len() as u64, count);
                                    }
                                    response.base_offset =
                                        i64::try_from(info.base_offset).unwrap_or(i64::MAX);
                                    if version >= 5 {
                                        response.log_start_offset =
                                            i64::try_from(info.log_start).unwrap_or(i64::MAX);
                                    }
                                    if partition.log.config().flush == FlushPolicy::Always {
                                        let end_offset = info.last_offset + 1;
                                        if acks == ACKS_ALL {
                                            durable.push(Durable {
                                                partition: partition.clone(),
                                                end_offset,
                                                topic_at,
                                                partition_at,
                                            });
                                        } else {
                                            // Consumers see only what is durable: the append
                                            // of a producer that does not wait is fsynced in
                                            // the next round all the same.
                                            drop(group_commit::durable(&partition, end_offset));
                                        }
                                    }
                                    errors::NONE
                                }
                                Err(error) => {
                                    debug!(topic = %name, partition = data.index, %error, "append refused");
                                    // A limit (descriptors, disk space) is said as what it is.
                                    let limit = match &error {
                                        AppendError::Io(io) => partition.limit_message(io),
                                        _ => None,
                                    };
                                    if version >= 8 {
                                        let message =
                                            limit.clone().unwrap_or_else(|| error.to_string());
                                        response.error_message = Some(str_bytes(&message));
                                        // Which records a compacted topic refused, so the
                                        // client fails only those with INVALID_RECORD.
                                        if let AppendError::KeylessRecord { records, .. } = &error {
                                            response.record_errors = records
                                                .iter()
                                                .map(|&i| {
                                                    BatchIndexAndErrorMessage::default()
                                                        .with_batch_index(
                                                            i32::try_from(i).unwrap_or(i32::MAX),
                                                        )
                                                        .with_batch_index_error_message(Some(
                                                            str_bytes(
                                                                "Compacted topic cannot accept message without key",
                                                            ),
                                                        ))
                                                })
                                                .collect();
                                        }
                                    }
                                    match limit {
                                        Some(_) => code(Problem::ResourceLimit),
                                        None => code(append_problem(&error)),
                                    }
                                }
                            }
                        }
                    },
                }
            };
            partitions.push(response.with_error_code(error_code));
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_name(&name))
                .with_partition_responses(partitions),
        );
    }
    if acks == 0 {
        let refused = responses
            .iter()
            .flat_map(|topic| topic.partition_responses.iter())
            .filter(|partition| partition.error_code != errors::NONE)
            .count();
        if refused > 0 {
            return Reply::Close(format!(
                "acks=0 produce refused for {refused} partitions (error codes are not sent with acks=0)"
            ));
        }
        return Reply::Nothing;
    }
    let response = ProduceResponse::default().with_responses(responses);
    if durable.is_empty() {
        return Reply::Ready(Box::new(ResponseKind::Produce(response)));
    }
    let waits: Vec<_> = durable
        .iter()
        .map(|wait| group_commit::durable(&wait.partition, wait.end_offset))
        .collect();
    Reply::Later(Box::pin(wait_durable(response, durable, waits)))
}

/// Waits for every appended partition to be fsynced (group commit, one flusher per
/// partition); a partition whose fsync fails is answered with a storage error instead of its
/// offset.
async fn wait_durable(
    mut response: ProduceResponse,
    durable: Vec<Durable>,
    waits: Vec<tokio::sync::oneshot::Receiver<bool>>,
) -> ResponseKind {
    for (wait, synced) in durable.iter().zip(waits) {
        // A dropped sender means the flusher died: nothing is known to be durable.
        if synced.await.unwrap_or(false) {
            continue;
        }
        if let Some(partition) = response
            .responses
            .get_mut(wait.topic_at)
            .and_then(|topic| topic.partition_responses.get_mut(wait.partition_at))
        {
            partition.error_code = code(Problem::StorageError);
            partition.base_offset = -1;
        }
    }
    ResponseKind::Produce(response)
}
