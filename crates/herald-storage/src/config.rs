//! Per-log configuration: segment size and age, retention, flush policy and the limits on input.

use crate::error::ConfigError;

/// When appended batches are forced to disk.
///
/// ```
/// use herald_storage::FlushPolicy;
/// assert_eq!(FlushPolicy::default(), FlushPolicy::Always);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// `sync_to` waits for an fsync covering the caller's records (group commit).
    #[default]
    Always,
    /// `maintain` fsyncs when this many milliseconds have passed since the last fsync.
    IntervalMs(u64),
    /// Only rolls, `flush` and clean shutdown fsync; the OS writes back when it likes.
    Never,
}

/// What happens to old records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CleanupPolicy {
    /// Whole closed segments are deleted by time and size retention.
    #[default]
    Delete,
    /// Closed segments are compacted by the log cleaner ([`crate::PartitionLog::clean`]): the
    /// latest record per key is kept; nothing is deleted by time or size.
    Compact,
    /// Both: compacted, and whole closed segments deleted by retention (Kafka `compact,delete`).
    CompactDelete,
}

impl CleanupPolicy {
    /// Whether retention deletes whole closed segments.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
    /// Whether the log cleaner compacts the log.
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }
}

/// Which clock a stored batch's timestamps come from (Kafka `message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// The producer's timestamps, kept as sent.
    #[default]
    CreateTime,
    /// The log's clock at append: the batch is marked log-append-time and its max timestamp,
    /// which readers then give every record, is set to the append time.
    LogAppendTime,
}

/// The codec batches are stored in (Kafka `compression.type` other than `producer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression (Kafka `uncompressed`).
    None,
    /// gzip.
    Gzip,
    /// snappy, in the xerial framing Java clients write.
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The codec's number in a batch's attributes.
    pub(crate) fn codec(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// One partition log's configuration. Every limit carries its unit in its name.
///
/// ```
/// use herald_storage::LogConfig;
/// let config = LogConfig { segment_bytes: 64 << 20, ..LogConfig::default() };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment is rolled before an append would make it larger than this.
    pub segment_bytes: u64,
    /// A non-empty segment is rolled once its first append is this old.
    pub segment_ms: u64,
    /// Closed segments whose newest record is older than this are deleted; `None` keeps forever.
    pub retention_ms: Option<u64>,
    /// Oldest closed segments are deleted while the log is larger than this; `None` is unlimited.
    pub retention_bytes: Option<u64>,
    /// When appends are fsynced.
    pub flush: FlushPolicy,
    /// Delete, compact, or both.
    pub cleanup_policy: CleanupPolicy,
    /// Compacted logs: a tombstone (a record with a null value) whose timestamp is older than
    /// this is removed by the cleaner (Kafka `delete.retention.ms`).
    pub delete_retention_ms: u64,
    /// Compacted logs: the cleaner runs when the dirty part of the closed segments is at least
    /// this many millionths of them (Kafka `min.cleanable.dirty.ratio` times 10^6).
    pub min_cleanable_dirty_ratio_ppm: u32,
    /// Compacted logs: a segment whose newest record is younger than this is not cleaned yet
    /// (Kafka `min.compaction.lag.ms`).
    pub min_compaction_lag_ms: u64,
    /// Compacted logs: a dirty record older than this is cleaned whatever the dirty ratio, and
    /// the active segment is rolled when its first record is this old (Kafka
    /// `max.compaction.lag.ms`).
    pub max_compaction_lag_ms: u64,
    /// Largest single record batch accepted, header included (Kafka `max.message.bytes`).
    pub batch_bytes_max: u32,
    /// Bytes of batches between two entries of the sparse offset and time indexes.
    pub index_interval_bytes: u32,
    /// Largest `append` input (one or more concatenated batches).
    pub append_bytes_max: u32,
    /// How often `maintain` writes a recovery checkpoint, bounding what a crash makes reopen scan.
    pub checkpoint_interval_ms: u64,
    /// Idempotent producers whose state is kept; the least recently seen is forgotten beyond it.
    pub producers_max: u32,
    /// Whose clock stamps stored batches.
    pub timestamp_type: TimestampType,
    /// Under `CreateTime`, a batch whose first timestamp is more than this far before the
    /// log's clock is refused; `None` accepts any age.
    pub timestamp_before_max_ms: Option<u64>,
    /// Under `CreateTime`, a batch whose max timestamp is more than this far after the log's
    /// clock is refused; `None` accepts any.
    pub timestamp_after_max_ms: Option<u64>,
    /// Recompress batches into this codec before storing them; `None` stores them as the
    /// producer compressed them.
    pub compression: Option<Compression>,
    /// The active segment's blocks are reserved up to this far ahead of its end (as far as
    /// the segment already holds, at least 64 KiB, never past `segment_bytes`), so most
    /// appends allocate nothing and change no length and their fsync writes data only (about
    /// a third less time per fsync on ext4); 0 = grow with each write. The reserve is cut off
    /// when the segment closes and by recovery.
    pub preallocate_bytes: u64,
}

/// The default [`LogConfig::preallocate_bytes`]: one `fallocate` per 8 MiB appended.
pub const PREALLOCATE_BYTES_DEFAULT: u64 = 8 << 20;

/// Kafka's default `max.message.bytes`.
pub const DEFAULT_BATCH_BYTES_MAX: u32 = 1_048_588;
/// The largest batch any configuration may allow; recovery also rejects longer length fields.
pub const BATCH_BYTES_MAX: u32 = 128 << 20;
/// The smallest segment size accepted (small values are for tests).
pub const SEGMENT_BYTES_MIN: u64 = 1024;
/// The largest segment size: index entries store positions as u32.
pub const SEGMENT_BYTES_MAX: u64 = (1 << 31) - 1;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            retention_ms: Some(14 * DAY_MS),
            retention_bytes: None,
            flush: FlushPolicy::Always,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: DAY_MS,
            min_cleanable_dirty_ratio_ppm: 500_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: u64::MAX,
            batch_bytes_max: DEFAULT_BATCH_BYTES_MAX,
            index_interval_bytes: 4096,
            append_bytes_max: 64 << 20,
            checkpoint_interval_ms: 60_000,
            producers_max: 10_000,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: None,
            timestamp_after_max_ms: None,
            compression: None,
            preallocate_bytes: PREALLOCATE_BYTES_DEFAULT,
        }
    }
}

impl LogConfig {
    /// Checks every field is in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(ConfigError::OutOfRange {
                field: "segment_bytes",
                value: self.segment_bytes,
                min: SEGMENT_BYTES_MIN,
                max: SEGMENT_BYTES_MAX,
            });
        }
        let ranges: [(&'static str, u64, u64, u64); 9] = [
            (
                "preallocate_bytes",
                self.preallocate_bytes,
                0,
                SEGMENT_BYTES_MAX,
            ),
            (
                "min_cleanable_dirty_ratio_ppm",
                u64::from(self.min_cleanable_dirty_ratio_ppm),
                0,
                1_000_000,
            ),
            (
                "max_compaction_lag_ms",
                self.max_compaction_lag_ms,
                1,
                u64::MAX,
            ),
            ("segment_ms", self.segment_ms, 1, u64::MAX),
            (
                "batch_bytes_max",
                u64::from(self.batch_bytes_max),
                crate::batch::BATCH_HEADER_BYTES as u64,
                u64::from(BATCH_BYTES_MAX),
            ),
            (
                "index_interval_bytes",
                u64::from(self.index_interval_bytes),
                1,
                SEGMENT_BYTES_MAX,
            ),
            (
                "append_bytes_max",
                u64::from(self.append_bytes_max),
                crate::batch::BATCH_HEADER_BYTES as u64,
                u64::from(u32::MAX),
            ),
            (
                "checkpoint_interval_ms",
                self.checkpoint_interval_ms,
                1,
                u64::MAX,
            ),
            ("producers_max", u64::from(self.producers_max), 1, 1 << 24),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        if let FlushPolicy::IntervalMs(0) = self.flush {
            return Err(ConfigError::OutOfRange {
                field: "flush.interval_ms",
                value: 0,
                min: 1,
                max: u64::MAX,
            });
        }
        Ok(())
    }
}
