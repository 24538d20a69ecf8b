//! The broker core's failure categories, shared by its per-operation error types so that the
//! wire layer can turn any of them into a Kafka error code in one place
//! (`wire::errors::code`).

/// What went wrong, in the terms a client can act on. Each core error type says which
/// category it falls in through a `problem()` method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The topic or partition does not exist.
    UnknownTopicOrPartition,
    /// A topic of that name exists already.
    TopicAlreadyExists,
    /// The topic name is empty, too long, or uses characters Kafka does not allow.
    InvalidTopic,
    /// A partition count or replication factor that cannot be honoured.
    InvalidPartitions,
    /// A replication factor other than 1 (this broker is a single node).
    InvalidReplicationFactor,
    /// A topic config with an unknown name or a value out of range.
    InvalidConfig,
    /// A record batch with a bad CRC, length or magic byte.
    CorruptMessage,
    /// A record the topic cannot take (a record without a key on a compacted topic).
    InvalidRecord,
    /// A record batch over the topic's `max.message.bytes`.
    MessageTooLarge,
    /// A record batch dated further from the broker's clock than the topic allows.
    InvalidTimestamp,
    /// An idempotent producer skipped a sequence number.
    OutOfOrderSequence,
    /// An idempotent producer with an older epoch than the one we know.
    ProducerFenced,
    /// An idempotent producer we have no state for, not starting at sequence 0.
    UnknownProducerId,
    /// The offset is outside the log's range.
    OffsetOutOfRange,
    /// The log failed on disk and refuses writes until the broker restarts.
    StorageError,
    /// A broker-wide limit (open files, partitions, disk space) refused the operation; the
    /// error message names the limit and the setting.
    ResourceLimit,
}
