//! ListOffsets (earliest, latest, by timestamp, the largest timestamp) and DeleteRecords.

use herald_storage::DeleteRecordsError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use tracing::warn;

use super::errors::{self, code};
use super::topic_name;
use crate::Core;
use crate::problem::Problem;

/// ListOffsets timestamp asking for the log end.
const LATEST: i64 = -1;
/// ListOffsets timestamp asking for the log start.
const EARLIEST: i64 = -2;
/// ListOffsets timestamp asking for the record with the largest timestamp (v7+).
const MAX_TIMESTAMP: i64 = -3;

fn as_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

pub(crate) fn list_offsets(
    core: &Core,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|wanted| {
            let topic = core.topics.get(wanted.name.as_str());
            let partitions = wanted
                .partitions
                .into_iter()
                .map(|asked| {
                    let mut response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(asked.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    if version >= 4 {
                        response.leader_epoch = 0;
                    }
                    let Some(partition) = topic.as_ref().and_then(|topic| topic.partition(asked.partition_index))
                    else {
                        return response.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    let offsets = partition.log.offsets();
                    match asked.timestamp {
                        // read_committed (isolation level 1) ends at the last stable offset.
                        LATEST => {
                            let stable = (request.isolation_level == 1)
                                .then(|| {
                                    core.transactions
                                        .first_unstable(wanted.name.as_str(), asked.partition_index)
                                })
                                .flatten()
                                .unwrap_or(u64::MAX);
                            response.with_offset(as_i64(offsets.visible_end.min(stable)))
                        }
                        EARLIEST => response.with_offset(as_i64(offsets.log_start)),
                        timestamp if timestamp >= 0 || (timestamp == MAX_TIMESTAMP && version >= 7) => {
                            let found = if timestamp == MAX_TIMESTAMP {
                                partition.log.offset_of_max_timestamp()
                            } else {
                                partition.log.offset_for_timestamp(timestamp)
                            };
                            match found {
                                Ok(Some((offset, found))) => {
                                    response.with_offset(as_i64(offset)).with_timestamp(found)
                                }
                                // No record that late: Kafka answers offset -1.
                                Ok(None) => response,
                                Err(error) => {
                                    warn!(topic = %wanted.name.as_str(), partition = asked.partition_index, %error, "timestamp lookup failed");
                                    response.with_error_code(code(Problem::StorageError))
                                }
                            }
                        }
                        // Other specials (tiered storage's -4 and -5) belong to versions not served.
                        _ => response.with_error_code(errors::INVALID_REQUEST),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(wanted.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

fn delete_problem(error: &DeleteRecordsError) -> Problem {
    match error {
        DeleteRecordsError::OffsetOutOfRange { .. } => Problem::OffsetOutOfRange,
        DeleteRecordsError::Deleted => Problem::UnknownTopicOrPartition,
        _ => Problem::StorageError,
    }
}

pub(crate) fn delete_records(core: &Core, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|wanted| {
            let topic = core.topics.get(wanted.name.as_str());
            let partitions = wanted
                .partitions
                .into_iter()
                .map(|asked| {
                    let response = DeleteRecordsPartitionResult::default()
                        .with_partition_index(asked.partition_index)
                        .with_low_watermark(-1);
                    let Some(partition) = topic
                        .as_ref()
                        .and_then(|topic| topic.partition(asked.partition_index))
                    else {
                        return response.with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    // -1 means "up to the high watermark", as in Kafka.
                    let offset = if asked.offset == -1 {
                        partition.log.offsets().visible_end
                    } else {
                        match u64::try_from(asked.offset) {
                            Ok(offset) => offset,
                            Err(_) => {
                                return response.with_error_code(code(Problem::OffsetOutOfRange));
                            }
                        }
                    };
                    match partition.log.delete_records_before(offset) {
                        Ok(log_start) => response.with_low_watermark(as_i64(log_start)),
                        Err(error) => response.with_error_code(code(delete_problem(&error))),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic_name(wanted.name.as_str()))
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
