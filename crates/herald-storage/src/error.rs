//! Typed errors, one enum per operation, and the umbrella [`StorageError`] they all convert into.

use std::io;
use std::path::PathBuf;

/// A configuration the log cannot run with.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A numeric field is outside its accepted range.
    #[error("{field} = {value} is out of range [{min}, {max}]")]
    OutOfRange {
        /// The field's name as in [`crate::LogConfig`].
        field: &'static str,
        /// The rejected value.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
}

/// Opening (and recovering) a partition log failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration was rejected.
    #[error("invalid log configuration: {0}")]
    Config(#[from] ConfigError),
    /// Another process has the directory open (e.g. a second broker on the same data directory).
    #[error("{path} is already open by another process")]
    Locked {
        /// The partition directory.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// An append was refused; nothing of it was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// A batch failed validation: length, magic, CRC-32C or record count (Kafka `CORRUPT_MESSAGE`).
    #[error("corrupt record batch at byte {position} of the input: {reason}")]
    CorruptBatch {
        /// Byte position of the offending batch within the append input.
        position: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A compacted log was sent a record without a key, which compaction could never
    /// replace (Kafka `INVALID_RECORD`).
    #[error(
        "compacted topic cannot accept a record without a key (batch at byte {position} of the input)"
    )]
    KeylessRecord {
        /// Byte position of the offending batch within the append input.
        position: usize,
        /// Indexes, within that batch, of the records without a key.
        records: Vec<u32>,
    },
    /// A batch (or the whole input) is larger than allowed (Kafka `MESSAGE_TOO_LARGE`).
    #[error("record batch of {batch_bytes} bytes exceeds the limit of {batch_bytes_max} bytes")]
    BatchTooLarge {
        /// Size of the offending batch or input.
        batch_bytes: u64,
        /// The limit it broke.
        batch_bytes_max: u64,
    },
    /// A batch's timestamp is further from the log's clock than the config allows (Kafka
    /// `INVALID_TIMESTAMP`).
    #[error(
        "record batch at byte {position} of the input has timestamp {timestamp}, {distance_ms} ms {direction} the broker's time {now_ms}; the limit is {limit_ms} ms"
    )]
    InvalidTimestamp {
        /// Byte position of the offending batch within the append input.
        position: usize,
        /// The batch's timestamp that broke the limit.
        timestamp: i64,
        /// The log's clock.
        now_ms: i64,
        /// How far the timestamp is from `now_ms`.
        distance_ms: u64,
        /// `before` or `after`.
        direction: &'static str,
        /// The limit (`message.timestamp.before.max.ms` or `...after.max.ms`).
        limit_ms: u64,
    },
    /// An idempotent producer skipped or repeated sequence numbers.
    #[error(
        "out of order sequence for producer {producer_id} epoch {producer_epoch}: expected {expected_sequence}, got {sequence}"
    )]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The batch's producer epoch.
        producer_epoch: i16,
        /// The sequence that would have been in order (-1 when any new-epoch sequence must be 0).
        expected_sequence: i32,
        /// The batch's base sequence.
        sequence: i32,
    },
    /// A newer epoch of this producer id has written; this one is a zombie.
    #[error("producer {producer_id} epoch {producer_epoch} is fenced by epoch {current_epoch}")]
    ProducerFenced {
        /// The producer.
        producer_id: i64,
        /// The batch's (stale) epoch.
        producer_epoch: i16,
        /// The epoch the log has seen.
        current_epoch: i16,
    },
    /// The log has no state for this producer and cannot accept its sequence. Not returned
    /// today: like Kafka 3.x, a producer the log has no state for (never seen, or its batches
    /// removed by retention or DeleteRecords) is accepted at any sequence.
    #[error("unknown producer id {producer_id}")]
    UnknownProducerId {
        /// The producer.
        producer_id: i64,
    },
    /// A previous write or fsync failed; the log refuses writes until reopened
    /// (Kafka `KAFKA_STORAGE_ERROR`).
    #[error("a previous write or fsync failed; close and reopen the log")]
    Poisoned,
    /// The log was retired for deletion: its partition no longer exists (Kafka
    /// `UNKNOWN_TOPIC_OR_PARTITION`).
    #[error("the log was deleted")]
    Deleted,
    /// Writing failed (the log is now poisoned).
    #[error("I/O error while appending: {0}")]
    Io(#[from] io::Error),
}

/// A read could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The offset is below the log start or above the high watermark.
    #[error("offset out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        /// First readable offset.
        log_start: u64,
        /// Next offset to be written.
        high_watermark: u64,
    },
    /// Stored bytes did not parse as record batches where an index said they would.
    #[error("corrupt data in segment {segment_base} at byte {position}: {reason}")]
    Corrupt {
        /// Base offset of the segment.
        segment_base: u64,
        /// Byte position in the segment file.
        position: u64,
        /// What was wrong.
        reason: &'static str,
    },
    /// Reading failed.
    #[error("I/O error while reading: {0}")]
    Io(#[from] io::Error),
}

/// An fsync could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// A previous write or fsync failed; the log refuses writes until reopened.
    #[error("a previous write or fsync failed; close and reopen the log")]
    Poisoned,
    /// The fsync failed (the log is now poisoned).
    #[error("fsync failed: {0}")]
    Io(#[from] io::Error),
}

/// DeleteRecords could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeleteRecordsError {
    /// The offset is above the high watermark.
    #[error("offset out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        /// First readable offset.
        log_start: u64,
        /// Next offset to be written.
        high_watermark: u64,
    },
    /// A previous write or fsync failed; the log refuses writes until reopened.
    #[error("a previous write or fsync failed; close and reopen the log")]
    Poisoned,
    /// The log was retired for deletion.
    #[error("the log was deleted")]
    Deleted,
    /// Persisting the new log start or deleting files failed.
    #[error("I/O error while deleting records: {0}")]
    Io(#[from] io::Error),
}

/// Housekeeping (interval flush, roll, retention, checkpoint) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaintainError {
    /// A previous write or fsync failed; the log refuses writes until reopened.
    #[error("a previous write or fsync failed; close and reopen the log")]
    Poisoned,
    /// A file operation failed.
    #[error("I/O error during maintenance: {0}")]
    Io(#[from] io::Error),
}

/// A log cleaner pass failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CleanError {
    /// A previous write or fsync failed; the log refuses writes until reopened.
    #[error("a previous write or fsync failed; close and reopen the log")]
    Poisoned,
    /// A closed segment holds a batch the cleaner cannot decode; the log is left as it was.
    #[error("segment {segment_base} holds an undecodable batch at byte {position}: {reason}")]
    Corrupt {
        /// Base offset of the segment.
        segment_base: u64,
        /// Byte position of the batch in the segment.
        position: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A file operation failed; a failure before the swap leaves the log as it was, one during
    /// it poisons the log (reopening completes the swap).
    #[error("I/O error while cleaning: {0}")]
    Io(#[from] io::Error),
}

impl From<FlushError> for MaintainError {
    fn from(e: FlushError) -> Self {
        match e {
            FlushError::Poisoned => MaintainError::Poisoned,
            FlushError::Io(e) => MaintainError::Io(e),
        }
    }
}

impl From<FlushError> for DeleteRecordsError {
    fn from(e: FlushError) -> Self {
        match e {
            FlushError::Poisoned => DeleteRecordsError::Poisoned,
            FlushError::Io(e) => DeleteRecordsError::Io(e),
        }
    }
}

impl From<FlushError> for AppendError {
    fn from(e: FlushError) -> Self {
        match e {
            FlushError::Poisoned => AppendError::Poisoned,
            FlushError::Io(e) => AppendError::Io(e),
        }
    }
}

/// Any storage error, for callers that do not care which operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// See [`ConfigError`].
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// See [`OpenError`].
    #[error(transparent)]
    Open(#[from] OpenError),
    /// See [`AppendError`].
    #[error(transparent)]
    Append(#[from] AppendError),
    /// See [`ReadError`].
    #[error(transparent)]
    Read(#[from] ReadError),
    /// See [`FlushError`].
    #[error(transparent)]
    Flush(#[from] FlushError),
    /// See [`DeleteRecordsError`].
    #[error(transparent)]
    DeleteRecords(#[from] DeleteRecordsError),
    /// See [`MaintainError`].
    #[error(transparent)]
    Maintain(#[from] MaintainError),
    /// See [`CleanError`].
    #[error(transparent)]
    Clean(#[from] CleanError),
}
