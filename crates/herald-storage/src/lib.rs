//! Durable, crash-safe partition log: segments of Kafka record batches, indexes, recovery, retention.
//!
//! A partition is a directory of segments (`{base_offset:020}.log`) holding Kafka RecordBatch v2
//! bytes as producers sent them (only the base offset and leader epoch rewritten), each with a
//! sparse offset index and time index, plus a recovery checkpoint. Compacted logs are cleaned
//! by [`PartitionLog::clean`] (`log/clean.rs`). See `docs/storage-format.md`.
//! All file I/O goes through [`FileSystem`]/[`StorageFile`] and time through [`Clock`], so tests
//! can crash, tear writes and move time ([`SimFs`], [`ManualClock`]).

mod batch;
mod checkpoint;
mod config;
mod env;
mod error;
mod files;
pub mod fuzzing;
mod index;
mod log;
mod producer;
mod records;

pub use records::{StoredRecord, decode_records};

pub use batch::{
    BATCH_HEADER_BYTES, CONTROL_BIT, KeyedRecord, LOG_OVERHEAD_BYTES, TRANSACTIONAL_BIT,
    build_batch, build_control_batch, build_keyed_batch,
};
pub use config::{
    BATCH_BYTES_MAX, CleanupPolicy, Compression, DEFAULT_BATCH_BYTES_MAX, FlushPolicy, LogConfig,
    PREALLOCATE_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, TimestampType,
};
pub use env::{
    Clock, DirLock, Env, FileSystem, LOCK_FILE, ManualClock, OsFileSystem, SimFs, StorageFile,
    SystemClock,
};
pub use error::{
    AppendError, CleanError, ConfigError, DeleteRecordsError, FlushError, MaintainError, OpenError,
    ReadError, StorageError,
};
pub use files::{
    DEFAULT_OPEN_FILES_MAX, FileCache, FileCacheStats, is_disk_full, is_open_files_limit,
};
pub use log::{
    AbortMarker, AppendInfo, CHECKPOINT_LAG_BYTES_MAX, CleanBounds, CleanOutcome, Cleanable,
    DEFAULT_DEDUPE_BUFFER_BYTES, FileRange, KEY_MAP_ENTRY_BYTES, LogStats, MaintainOutcome,
    Offsets, PartitionLog, READ_BYTES_MAX, RangedBatches, RangedReadOutcome, ReadOutcome, Throttle,
};
