//! Kafka error codes, and the functions that map the broker core's failures to them: `code`
//! for the core's [`Problem`] categories, `group_code` for the coordinator's errors. Codes are
//! taken from `kafka_protocol`'s table, never numbered by hand.

use kafka_protocol::ResponseError;

use crate::group::GroupError;
use crate::problem::Problem;

/// Kafka `NONE`.
pub(crate) const NONE: i16 = 0;
/// Kafka `OFFSET_OUT_OF_RANGE`.
pub(crate) const OFFSET_OUT_OF_RANGE: i16 = ResponseError::OffsetOutOfRange.code();
/// Kafka `CORRUPT_MESSAGE`.
pub(crate) const CORRUPT_MESSAGE: i16 = ResponseError::CorruptMessage.code();
/// Kafka `UNKNOWN_TOPIC_OR_PARTITION`.
pub(crate) const UNKNOWN_TOPIC_OR_PARTITION: i16 = ResponseError::UnknownTopicOrPartition.code();
/// Kafka `MESSAGE_TOO_LARGE`.
pub(crate) const MESSAGE_TOO_LARGE: i16 = ResponseError::MessageTooLarge.code();
/// Kafka `INVALID_TOPIC_EXCEPTION`.
pub(crate) const INVALID_TOPIC: i16 = ResponseError::InvalidTopicException.code();
/// Kafka `INVALID_REQUIRED_ACKS`.
pub(crate) const INVALID_REQUIRED_ACKS: i16 = ResponseError::InvalidRequiredAcks.code();
/// Kafka `INVALID_RECORD`.
pub(crate) const INVALID_RECORD: i16 = ResponseError::InvalidRecord.code();
/// Kafka `INVALID_TIMESTAMP`.
pub(crate) const INVALID_TIMESTAMP: i16 = ResponseError::InvalidTimestamp.code();
/// Kafka `UNSUPPORTED_VERSION`.
pub(crate) const UNSUPPORTED_VERSION: i16 = ResponseError::UnsupportedVersion.code();
/// Kafka `TOPIC_ALREADY_EXISTS`.
pub(crate) const TOPIC_ALREADY_EXISTS: i16 = ResponseError::TopicAlreadyExists.code();
/// Kafka `INVALID_PARTITIONS`.
pub(crate) const INVALID_PARTITIONS: i16 = ResponseError::InvalidPartitions.code();
/// Kafka `INVALID_REPLICATION_FACTOR`.
pub(crate) const INVALID_REPLICATION_FACTOR: i16 = ResponseError::InvalidReplicationFactor.code();
/// Kafka `INVALID_REPLICA_ASSIGNMENT`.
pub(crate) const INVALID_REPLICA_ASSIGNMENT: i16 = ResponseError::InvalidReplicaAssignment.code();
/// Kafka `INVALID_REQUEST`.
pub(crate) const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
/// Kafka `OUT_OF_ORDER_SEQUENCE_NUMBER`.
pub(crate) const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = ResponseError::OutOfOrderSequenceNumber.code();
/// Kafka `INVALID_PRODUCER_EPOCH` (a fenced producer).
pub(crate) const INVALID_PRODUCER_EPOCH: i16 = ResponseError::InvalidProducerEpoch.code();
/// Kafka `INVALID_CONFIG`.
pub(crate) const INVALID_CONFIG: i16 = ResponseError::InvalidConfig.code();
/// Kafka `KAFKA_STORAGE_ERROR`.
pub(crate) const KAFKA_STORAGE_ERROR: i16 = ResponseError::KafkaStorageError.code();
/// Kafka `POLICY_VIOLATION`: what a broker limit (open files, partitions, disk space) refuses
/// with, as Kafka's create-topic policies do; clients show the message, which names the limit.
pub(crate) const POLICY_VIOLATION: i16 = ResponseError::PolicyViolation.code();
/// Kafka `UNKNOWN_PRODUCER_ID`.
pub(crate) const UNKNOWN_PRODUCER_ID: i16 = ResponseError::UnknownProducerId.code();
/// Kafka `UNKNOWN_TOPIC_ID`.
pub(crate) const UNKNOWN_TOPIC_ID: i16 = ResponseError::UnknownTopicId.code();

/// The Kafka error code for a core failure. This is the only place that decides it.
pub(crate) fn code(problem: Problem) -> i16 {
    match problem {
        Problem::UnknownTopicOrPartition => UNKNOWN_TOPIC_OR_PARTITION,
        Problem::TopicAlreadyExists => TOPIC_ALREADY_EXISTS,
        Problem::InvalidTopic => INVALID_TOPIC,
        Problem::InvalidPartitions => INVALID_PARTITIONS,
        Problem::InvalidReplicationFactor => INVALID_REPLICATION_FACTOR,
        Problem::InvalidConfig => INVALID_CONFIG,
        Problem::CorruptMessage => CORRUPT_MESSAGE,
        Problem::MessageTooLarge => MESSAGE_TOO_LARGE,
        Problem::InvalidTimestamp => INVALID_TIMESTAMP,
        Problem::InvalidRecord => INVALID_RECORD,
        Problem::OutOfOrderSequence => OUT_OF_ORDER_SEQUENCE_NUMBER,
        Problem::ProducerFenced => INVALID_PRODUCER_EPOCH,
        Problem::UnknownProducerId => UNKNOWN_PRODUCER_ID,
        Problem::OffsetOutOfRange => OFFSET_OUT_OF_RANGE,
        Problem::StorageError => KAFKA_STORAGE_ERROR,
        Problem::ResourceLimit => POLICY_VIOLATION,
    }
}

/// The Kafka error code for a coordinator error. This is the only place that decides it.
pub(crate) fn group_code(error: &GroupError) -> i16 {
    let e = match error {
        GroupError::StoreFailed => ResponseError::KafkaStorageError,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::InvalidSessionTimeout(_) => ResponseError::InvalidSessionTimeout,
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        // No Kafka code says "this broker holds too many groups"; a policy refusal is the
        // closest non-retriable one, and the broker logs which limit it was.
        GroupError::GroupsMaxReached => ResponseError::PolicyViolation,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        GroupError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
        GroupError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        GroupError::InvalidRequest(_) => ResponseError::InvalidRequest,
    };
    e.code()
}
