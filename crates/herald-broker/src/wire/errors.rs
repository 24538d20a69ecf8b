//! Kafka error codes, and the one function that maps the broker core's failures to them.

use crate::problem::Problem;

/// Kafka `NONE`.
pub(crate) const NONE: i16 = 0;
/// Kafka `OFFSET_OUT_OF_RANGE`.
pub(crate) const OFFSET_OUT_OF_RANGE: i16 = 1;
/// Kafka `CORRUPT_MESSAGE`.
pub(crate) const CORRUPT_MESSAGE: i16 = 2;
/// Kafka `UNKNOWN_TOPIC_OR_PARTITION`.
pub(crate) const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// Kafka `MESSAGE_TOO_LARGE`.
pub(crate) const MESSAGE_TOO_LARGE: i16 = 10;
/// Kafka `INVALID_TOPIC_EXCEPTION`.
pub(crate) const INVALID_TOPIC: i16 = 17;
/// Kafka `INVALID_REQUIRED_ACKS`.
pub(crate) const INVALID_REQUIRED_ACKS: i16 = 21;
/// Kafka `INVALID_TIMESTAMP`.
pub(crate) const INVALID_TIMESTAMP: i16 = 32;
/// Kafka `UNSUPPORTED_VERSION`.
pub(crate) const UNSUPPORTED_VERSION: i16 = 35;
/// Kafka `TOPIC_ALREADY_EXISTS`.
pub(crate) const TOPIC_ALREADY_EXISTS: i16 = 36;
/// Kafka `INVALID_PARTITIONS`.
pub(crate) const INVALID_PARTITIONS: i16 = 37;
/// Kafka `INVALID_REPLICATION_FACTOR`.
pub(crate) const INVALID_REPLICATION_FACTOR: i16 = 38;
/// Kafka `INVALID_REPLICA_ASSIGNMENT`.
pub(crate) const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
/// Kafka `INVALID_REQUEST`.
pub(crate) const INVALID_REQUEST: i16 = 42;
/// Kafka `OUT_OF_ORDER_SEQUENCE_NUMBER`.
pub(crate) const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// Kafka `INVALID_PRODUCER_EPOCH` (a fenced producer).
pub(crate) const INVALID_PRODUCER_EPOCH: i16 = 47;
/// Kafka `INVALID_CONFIG`.
pub(crate) const INVALID_CONFIG: i16 = 40;
/// Kafka `KAFKA_STORAGE_ERROR`.
pub(crate) const KAFKA_STORAGE_ERROR: i16 = 56;
/// Kafka `UNKNOWN_PRODUCER_ID`.
pub(crate) const UNKNOWN_PRODUCER_ID: i16 = 59;
/// Kafka `UNKNOWN_TOPIC_ID`.
pub(crate) const UNKNOWN_TOPIC_ID: i16 = 100;

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
        Problem::OutOfOrderSequence => OUT_OF_ORDER_SEQUENCE_NUMBER,
        Problem::ProducerFenced => INVALID_PRODUCER_EPOCH,
        Problem::UnknownProducerId => UNKNOWN_PRODUCER_ID,
        Problem::OffsetOutOfRange => OFFSET_OUT_OF_RANGE,
        Problem::StorageError => KAFKA_STORAGE_ERROR,
        Problem::Unsupported => UNSUPPORTED_VERSION,
    }
}
