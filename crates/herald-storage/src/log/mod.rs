//! [`PartitionLog`]: one partition's directory of segments, with append, group commit, read,
//! timestamp lookup, DeleteRecords, retention and crash recovery.
//!
//! Locking: `state` (a read-write lock) guards the segment list and offsets; appends hold it for
//! writing while they copy bytes into the page cache, readers hold it for reading only long enough
//! to pick a file and a position, then read with `pread` outside it. Fsyncs for group commit run
//! under `sync_state` alone, so appenders keep writing while one fsync covers everyone waiting.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::batch::{self, BATCH_HEADER_BYTES, BatchHeader, NO_TIMESTAMP};
use crate::checkpoint::{self, Checkpoint};
use crate::config::{Compression, FlushPolicy, LogConfig, TimestampType};
use crate::env::{DirLock, Env, StorageFile, read_exact_at};
use crate::error::{
    AppendError, ConfigError, DeleteRecordsError, FlushError, MaintainError, OpenError, ReadError,
};
use crate::files::{FileKey, FileKind};
use crate::index::{self, ActiveIndex};
use crate::producer::{Check, ProducerState};
use crate::records;

mod clean;
mod range;
mod recovery;

pub use range::{FileRange, RangedBatches, RangedReadOutcome};

pub use clean::{
    AbortMarker, CleanBounds, CleanOutcome, Cleanable, DEFAULT_DEDUPE_BUFFER_BYTES,
    KEY_MAP_ENTRY_BYTES, Throttle,
};

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended (or originally appended, for a duplicate).
    pub base_offset: u64,
    /// Offset of the last record.
    pub last_offset: u64,
    /// The batch was a retry of one already in the log; nothing was written.
    pub duplicate: bool,
    /// The log start offset after the append.
    pub log_start: u64,
}

/// Whole batches read from the log, exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Concatenated record batches (possibly empty).
    pub batches: Bytes,
    /// Next offset to be written, at the time of the read.
    pub high_watermark: u64,
    /// First readable offset, at the time of the read.
    pub log_start: u64,
}

/// The log's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    /// First readable offset.
    pub log_start: u64,
    /// Next offset to be written (the log end); every record below it is readable.
    pub high_watermark: u64,
    /// Every record below this offset has been fsynced.
    pub durable_end: u64,
    /// Every record below this offset may be shown to readers (Kafka's high watermark as
    /// consumers see it): the durable end for a log that fsyncs before acknowledging, because a
    /// consumer that read and committed past a record a crash then takes back would skip the
    /// record the producer sends again in its place; the log end for a log flushed on an
    /// interval or never, whose owner chose to trade that away.
    pub visible_end: u64,
}

/// Counters since the log was opened, for metrics (e.g. batches per fsync shows group commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStats {
    /// Appends that wrote batches (duplicates and rejected appends excluded).
    pub appends: u64,
    /// Fsyncs of a segment by `sync_to`/`flush` (group commits).
    pub group_commits: u64,
}

/// What one `maintain` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaintainOutcome {
    /// An interval flush ran.
    pub flushed: bool,
    /// The active segment was rolled because of its age (or to let retention delete it).
    pub rolled: bool,
    /// Segments deleted by retention.
    pub segments_deleted: usize,
    /// Bytes those segments held.
    pub bytes_deleted: u64,
    /// A recovery checkpoint was written.
    pub checkpointed: bool,
}

/// A segment's three files, from the shared cache ([`crate::FileCache`]) or, during recovery,
/// opened directly.
#[derive(Debug, Clone)]
struct SegFiles {
    log: Arc<dyn StorageFile>,
    index: Arc<dyn StorageFile>,
    time: Arc<dyn StorageFile>,
}

impl SegFiles {
    fn open(env: &Env, dir: &Path, base: u64, create: bool) -> std::io::Result<SegFiles> {
        Ok(SegFiles {
            log: env.fs.open(&log_path(dir, base), create)?,
            index: env.fs.open(&index_path(dir, base), true)?,
            time: env.fs.open(&time_path(dir, base), true)?,
        })
    }
}

#[derive(Debug)]
struct Segment {
    base: u64,
    /// Bytes of whole, valid batches.
    size: u64,
    /// Offset after the segment's last record.
    next_offset: u64,
    /// Largest batch max timestamp, or -1 when empty.
    max_timestamp: i64,
    /// Clock time of the first append, for `segment_ms`.
    roll_base_ms: Option<i64>,
    /// Clock time of the last append (or of opening), for retention of batches without timestamps.
    touched_ms: i64,
    /// In-memory indexes; `Some` only for the active (last) segment.
    active: Option<ActiveIndex>,
    /// Entries in the index files of a closed segment.
    offset_entries: u64,
    time_entries: u64,
    /// The log file's length when it is more than `size` (space preallocated past the end,
    /// reading as zeros; cut off when the segment closes), else `size` or less.
    allocated: u64,
}

impl Segment {
    fn retention_ts(&self) -> i64 {
        if self.max_timestamp >= 0 {
            self.max_timestamp
        } else {
            self.touched_ms
        }
    }
}

#[derive(Debug)]
struct State {
    config: LogConfig,
    /// Sorted by base offset, never empty; the last one is active.
    segments: Vec<Segment>,
    log_start: u64,
    next_offset: u64,
    producers: ProducerState,
    last_checkpoint: Checkpoint,
    last_checkpoint_ms: i64,
    /// Compacted logs: every record below this offset has been through a cleaner pass.
    cleaned_to: u64,
    /// Compacted logs: the last cleaner pass was held back by a transaction whose marker was
    /// not in the segments it could clean, which ended at this offset; the log is not due
    /// again until cleanable segments reach past it.
    clean_held_at: Option<u64>,
}

/// One partition's durable log of Kafka record batches.
///
/// `Send + Sync`; every method takes `&self`, so share it as `Arc<PartitionLog>`. Methods block
/// on file I/O: call them from a blocking thread (e.g. `tokio::task::spawn_blocking`).
///
/// ```
/// use herald_storage::{LogConfig, PartitionLog, build_batch};
/// let dir = tempfile::tempdir().unwrap();
/// let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
/// let info = log.append(&build_batch(1_700_000_000_000, &[], &[b"hello", b"world"], None)).unwrap();
/// assert_eq!((info.base_offset, info.last_offset), (0, 1));
/// log.sync_to(info.last_offset + 1).unwrap(); // durable from here on
/// let read = log.read(0, 1 << 20, true).unwrap();
/// assert_eq!(read.high_watermark, 2);
/// ```
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    env: Env,
    state: RwLock<State>,
    /// Whether a group-commit fsync is in progress; `sync_done` is notified when it ends.
    sync_state: Mutex<bool>,
    sync_done: Condvar,
    durable_end: AtomicU64,
    /// Clock time of the last fsync by `sync_to`/`flush`, for interval flushes.
    last_flush_ms: AtomicI64,
    poisoned: AtomicBool,
    /// A cleaner pass is running: retention and DeleteRecords leave segment files alone until
    /// it ends, so the segments it rewrites stay there.
    cleaning: AtomicBool,
    /// Cleaner swaps so far: a search reading files outside the lock that overlapped one
    /// starts again.
    swaps: AtomicU64,
    /// Set (under the state write lock) by [`PartitionLog::retire`]: nothing touches the
    /// directory any more.
    retired: AtomicBool,
    appends: AtomicU64,
    group_commits: AtomicU64,
    /// This log's id in the file cache.
    owner: u64,
    /// Released last, after `Drop` has written the final checkpoint (shared when the caller
    /// locked a directory above, see [`Env::held_lock`]).
    _dir_lock: Arc<DirLock>,
}

/// Maps an I/O failure on `path` while opening to [`OpenError::Io`].
fn io_err(path: &Path) -> impl Fn(std::io::Error) -> OpenError + use<> {
    let path = path.to_path_buf();
    move |source| OpenError::Io {
        path: path.clone(),
        source,
    }
}

/// The parts of the config an append reads before taking the write lock.
struct StoreRules {
    batch_bytes_max: u32,
    append_bytes_max: u32,
    timestamp_type: TimestampType,
    timestamp_before_max_ms: Option<u64>,
    timestamp_after_max_ms: Option<u64>,
    compression: Option<Compression>,
    compacted: bool,
}

/// Milliseconds from `since` to `now`, 0 if the clock went backwards.
fn elapsed_ms(now: i64, since: i64) -> u64 {
    u64::try_from(i128::from(now) - i128::from(since)).unwrap_or(0)
}

/// The most bytes one `read` returns (beyond a single larger first batch), whatever the caller
/// asks: bounds the buffer a fetch allocates.
pub const READ_BYTES_MAX: usize = 64 << 20;

/// Bytes appended to the active segment past the last checkpoint after which `maintain` writes
/// a new one without waiting for `checkpoint_interval_ms`. A crash makes reopen CRC-scan that
/// tail; at full produce speed a minute of it is gigabytes per partition and seconds of restart.
pub const CHECKPOINT_LAG_BYTES_MAX: u64 = 64 << 20;

/// Times a timestamp search is tried while cleaner swaps keep replacing segments under it.
const SEARCH_TRIES_MAX: u32 = 3;

/// The largest offset the log accepts; keeps every offset sum far from overflowing and every
/// offset representable in Kafka's signed 64-bit fields.
pub(crate) const OFFSET_MAX: u64 = (i64::MAX as u64) >> 1;

fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}
fn time_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}
fn seg_path(dir: &Path, base: u64, kind: FileKind) -> PathBuf {
    match kind {
        FileKind::Log => log_path(dir, base),
        FileKind::Index => index_path(dir, base),
        FileKind::Time => time_path(dir, base),
    }
}

/// Segment base offsets found in a directory listing, sorted.
fn segment_bases(names: &[String]) -> Vec<u64> {
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".log"))
        .filter(|stem| stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|stem| stem.parse().ok())
        .filter(|base| *base <= OFFSET_MAX)
        .collect();
    bases.sort_unstable();
    bases.dedup();
    bases
}

/// Where a read begins, found by [`PartitionLog::read_start`].
enum Start {
    /// Nothing to read at the offset (it is at or past the read's end).
    Nothing { high_watermark: u64, log_start: u64 },
    /// The batch holding the offset.
    At(ReadStart),
}

/// The first batch a read returns, in its segment file.
struct ReadStart {
    /// The segment's log file, held for the whole read.
    file: Arc<dyn StorageFile>,
    segment_base: u64,
    /// Bytes of whole batches in the segment when the read began.
    size: u64,
    /// Position of the first batch.
    pos: u64,
    /// Its length in bytes.
    first_len: usize,
    /// The read's end (the log end if lower), reported as the high watermark.
    high_watermark: u64,
    log_start: u64,
}

impl ReadStart {
    /// Bytes from the first batch on that a read of `max_bytes` looks at: up to `max_bytes`
    /// (at most [`READ_BYTES_MAX`]) within the segment, or the first batch alone when it is
    /// larger and `at_least_one` (KIP-74), or nothing.
    fn window_bytes(&self, max_bytes: usize, at_least_one: bool) -> usize {
        let max_bytes = max_bytes.min(READ_BYTES_MAX);
        if self.first_len > max_bytes {
            if at_least_one { self.first_len } else { 0 }
        } else {
            max_bytes.min((self.size - self.pos) as usize)
        }
    }

    /// The whole batches of the window below the high watermark, read into memory.
    fn read_bytes(&self, max_bytes: usize, at_least_one: bool) -> Result<Bytes, ReadError> {
        let mut buf = vec![0u8; self.window_bytes(max_bytes, at_least_one)];
        read_exact_at(self.file.as_ref(), &mut buf, self.pos)?;
        // Keep whole batches only, and only those below the end.
        let mut keep = 0usize;
        while keep < buf.len() {
            match batch::announced_len(&buf[keep..]) {
                Some(len)
                    if keep + len <= buf.len()
                        && batch::announced_last_offset(&buf[keep..]) < self.high_watermark =>
                {
                    keep += len;
                }
                _ => break,
            }
        }
        buf.truncate(keep);
        Ok(Bytes::from(buf))
    }
}

impl PartitionLog {
    /// Opens (creating if missing, recovering if needed) the log in `dir` on the real machine.
    pub fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, OpenError> {
        Self::open_with(dir, config, Env::default())
    }

    /// Opens the log with an injected file system and clock (tests use [`crate::SimFs`]).
    pub fn open_with(dir: &Path, config: LogConfig, env: Env) -> Result<PartitionLog, OpenError> {
        config.validate()?;
        env.fs.create_dir_all(dir).map_err(io_err(dir))?;
        let dir_lock = match &env.held_lock {
            Some(lock) => lock.clone(),
            None => Arc::new(env.fs.lock_dir(dir).map_err(|e| {
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    OpenError::Locked {
                        path: dir.to_path_buf(),
                    }
                } else {
                    io_err(dir)(e)
                }
            })?),
        };
        let now = env.clock.now_ms();
        let recovered = recovery::recover(dir, &config, &env, now)?;
        let owner = env.files.new_owner();
        let changed = recovered.changed;
        if let Some((base, files)) = recovered.active_files {
            // Recovery's handles carry its unsynced truncations until the checkpoint below
            // fsyncs them; a clean open drops them and opens files when first used.
            if changed {
                for (kind, file) in [
                    (FileKind::Log, files.log),
                    (FileKind::Index, files.index),
                    (FileKind::Time, files.time),
                ] {
                    env.files.adopt(FileKey { owner, base, kind }, file, true);
                }
            }
        }
        let state = State {
            config,
            segments: recovered.segments,
            log_start: recovered.log_start,
            next_offset: recovered.next_offset,
            producers: recovered.producers,
            last_checkpoint: recovered.checkpoint.unwrap_or_default(),
            last_checkpoint_ms: now,
            cleaned_to: clean::read_cleaner_checkpoint(env.fs.as_ref(), dir).cleaned_to,
            clean_held_at: None,
        };
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            env,
            state: RwLock::new(state),
            sync_state: Mutex::new(false),
            sync_done: Condvar::new(),
            durable_end: AtomicU64::new(0),
            last_flush_ms: AtomicI64::new(now),
            poisoned: AtomicBool::new(false),
            cleaning: AtomicBool::new(false),
            swaps: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            appends: AtomicU64::new(0),
            group_commits: AtomicU64::new(0),
            owner,
            _dir_lock: dir_lock,
        };
        // Make what recovery kept durable and record it, so the next open reads nothing of it.
        // After a clean close the checkpoint already says exactly that: nothing to write.
        // Either way everything below the checkpoint's recovery point is durable, and readers
        // may see it (`Offsets::visible_end`).
        {
            let mut st = log.state.write();
            if changed {
                log.checkpoint_locked(&mut st).map_err(io_err(dir))?;
            } else {
                log.durable_end
                    .fetch_max(st.last_checkpoint.next_offset, Ordering::SeqCst);
            }
        }
        Ok(log)
    }

    /// One of a segment's files, from the shared cache (opened if it is not there).
    fn file(&self, base: u64, kind: FileKind) -> std::io::Result<Arc<dyn StorageFile>> {
        let key = FileKey {
            owner: self.owner,
            base,
            kind,
        };
        self.env
            .files
            .get(key, || seg_path(&self.dir, base, kind), false)
    }

    /// All three files of a segment.
    fn seg_files(&self, base: u64) -> std::io::Result<SegFiles> {
        Ok(SegFiles {
            log: self.file(base, FileKind::Log)?,
            index: self.file(base, FileKind::Index)?,
            time: self.file(base, FileKind::Time)?,
        })
    }

    /// Drops the cache's handles of a segment's files (deleted, or the log closing).
    fn forget_segment(&self, base: u64) {
        for kind in [FileKind::Log, FileKind::Index, FileKind::Time] {
            self.env.files.forget(FileKey {
                owner: self.owner,
                base,
                kind,
            });
        }
    }

    /// A file of a segment for one read. A segment deleted by retention since the caller
    /// looked is reported as the offset being out of range, as Kafka does.
    fn read_file(&self, base: u64, kind: FileKind) -> Result<Arc<dyn StorageFile>, ReadError> {
        match self.file(base, kind) {
            Ok(file) => Ok(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let o = self.offsets();
                Err(ReadError::OffsetOutOfRange {
                    log_start: o.log_start,
                    high_watermark: o.high_watermark,
                })
            }
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    fn poison<E: std::fmt::Display>(&self, what: &str, e: E) {
        tracing::error!(dir = %self.dir.display(), error = %e, "{what} failed; the log refuses writes until reopened");
        self.poisoned.store(true, Ordering::SeqCst);
    }

    /// A failed checkpoint poisons the log, unless it failed for want of a file descriptor:
    /// that can only happen while opening a file, before anything was written, and the next
    /// `maintain` or close tries again.
    fn poison_checkpoint(&self, e: &std::io::Error) {
        if crate::files::is_open_files_limit(e) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "checkpoint postponed: no file descriptor left");
        } else {
            self.poison("checkpoint", e);
        }
    }

    /// Appends one or more concatenated Kafka RecordBatch v2, assigning offsets.
    ///
    /// All batches are validated (length, magic, CRC-32C, `batch_bytes_max`) and checked against
    /// idempotent-producer state before anything is written: all or nothing. The records are
    /// readable on return but not yet durable; call [`PartitionLog::sync_to`] for that.
    pub fn append(&self, batches: &[u8]) -> Result<AppendInfo, AppendError> {
        let config = {
            let st = self.state.read();
            StoreRules {
                batch_bytes_max: st.config.batch_bytes_max,
                append_bytes_max: st.config.append_bytes_max,
                timestamp_type: st.config.timestamp_type,
                timestamp_before_max_ms: st.config.timestamp_before_max_ms,
                timestamp_after_max_ms: st.config.timestamp_after_max_ms,
                compression: st.config.compression,
                compacted: st.config.cleanup_policy.compacts(),
            }
        };
        if batches.len() as u64 > u64::from(config.append_bytes_max) {
            return Err(AppendError::BatchTooLarge {
                batch_bytes: batches.len() as u64,
                batch_bytes_max: u64::from(config.append_bytes_max),
            });
        }
        let headers = batch::validate_input(batches, config.batch_bytes_max as usize)?;
        if config.compacted {
            check_keys(batches, &headers)?;
        }
        let (mut headers, mut buf) = self.as_stored(batches, headers, &config)?;
        let mut st = self.state.write();
        if self.is_poisoned() {
            return Err(AppendError::Poisoned);
        }
        if self.is_retired() {
            return Err(AppendError::Deleted);
        }
        let now = self.env.clock.now_ms();
        // Decide the roll before assigning offsets; a roll does not change them.
        let records: u64 = headers.iter().map(|h| h.records_count as u64).sum();
        let active = st.segments.last().ok_or(AppendError::Poisoned)?;
        let total = buf.len() as u64;
        let too_big = active.size > 0 && active.size + total > st.config.segment_bytes;
        let too_old = active
            .roll_base_ms
            .is_some_and(|t| elapsed_ms(now, t) >= st.config.segment_ms);
        let offsets_overflow = st.next_offset + records - active.base > u64::from(u32::MAX);
        let mut offset = st.next_offset;
        for h in &mut headers {
            h.base_offset = offset as i64;
            offset += h.records_count as u64;
        }
        match st.producers.check(&headers)? {
            Check::Duplicate(meta) => Ok(AppendInfo {
                base_offset: meta.base_offset,
                last_offset: meta.last_offset,
                duplicate: true,
                log_start: st.log_start,
            }),
            Check::Accept(updates) => {
                if active.size > 0 && (too_big || too_old || offsets_overflow) {
                    if let Err(e) = self.roll_locked(&mut st) {
                        self.poison("segment roll", &e);
                        return Err(AppendError::Io(e));
                    }
                }
                let mut pos = 0;
                for h in &headers {
                    batch::assign_offset(&mut buf[pos..pos + h.total_bytes], h.base_offset as u64);
                    pos += h.total_bytes;
                }
                let st = &mut *st;
                let seg = st.segments.last_mut().ok_or(AppendError::Poisoned)?;
                // Failing to get the file (no descriptor left) wrote nothing: no poisoning.
                let file = self.file(seg.base, FileKind::Log)?;
                preallocate(&st.config, seg, buf.len() as u64, file.as_ref());
                if let Err(e) = file.write_all_at(&buf, seg.size) {
                    self.poison("segment write", &e);
                    return Err(AppendError::Io(e));
                }
                let mut pos = seg.size;
                for h in &headers {
                    seg.max_timestamp = seg.max_timestamp.max(h.max_timestamp_known());
                    if let Some(idx) = seg.active.as_mut() {
                        idx.on_batch(
                            (h.base_offset as u64 - seg.base) as u32,
                            pos as u32,
                            h.total_bytes as u64,
                            seg.max_timestamp,
                        );
                    }
                    pos += h.total_bytes as u64;
                }
                let base_offset = st.next_offset;
                seg.size = pos;
                seg.next_offset = offset;
                seg.touched_ms = now;
                seg.roll_base_ms.get_or_insert(now);
                st.next_offset = offset;
                st.producers
                    .apply(updates, st.config.producers_max as usize);
                self.appends.fetch_add(1, Ordering::Relaxed);
                Ok(AppendInfo {
                    base_offset,
                    last_offset: offset - 1,
                    duplicate: false,
                    log_start: st.log_start,
                })
            }
        }
    }

    /// Checks the batches' timestamps and turns them into what the log stores: as received,
    /// or recompressed and stamped with the append time when the config says so.
    fn as_stored(
        &self,
        batches: &[u8],
        headers: Vec<BatchHeader>,
        rules: &StoreRules,
    ) -> Result<(Vec<BatchHeader>, Vec<u8>), AppendError> {
        let now = self.env.clock.now_ms();
        let create_time = rules.timestamp_type == TimestampType::CreateTime;
        let mut pos = 0;
        if create_time
            && (rules.timestamp_before_max_ms.is_some() || rules.timestamp_after_max_ms.is_some())
        {
            for h in &headers {
                batch::check_timestamps(
                    h,
                    pos,
                    now,
                    rules.timestamp_before_max_ms,
                    rules.timestamp_after_max_ms,
                )?;
                pos += h.total_bytes;
            }
        }
        let codec = rules.compression.map(Compression::codec);
        let append_time = (!create_time).then_some(now);
        if codec.is_none() && append_time.is_none() {
            return Ok((headers, batches.to_vec()));
        }
        let mut out = Vec::with_capacity(batches.len());
        let mut stored = Vec::with_capacity(headers.len());
        let mut pos = 0;
        for h in &headers {
            let batch = &batches[pos..pos + h.total_bytes];
            match batch::rewrite(batch, h, pos, codec, append_time)? {
                None => {
                    out.extend_from_slice(batch);
                    stored.push(*h);
                }
                Some(new) => {
                    if new.len() > rules.batch_bytes_max as usize {
                        return Err(AppendError::BatchTooLarge {
                            batch_bytes: new.len() as u64,
                            batch_bytes_max: u64::from(rules.batch_bytes_max),
                        });
                    }
                    let header = batch::parse_header(&new).ok_or(AppendError::CorruptBatch {
                        position: pos,
                        reason: "rewritten batch has no header",
                    })?;
                    out.extend_from_slice(&new);
                    stored.push(header);
                }
            }
            pos += h.total_bytes;
        }
        Ok((stored, out))
    }

    /// Group commit: returns once every record below `end_offset` is fsynced, one fsync covering
    /// every caller waiting at that moment. Returns at once under `IntervalMs` and `Never`.
    pub fn sync_to(&self, end_offset: u64) -> Result<(), FlushError> {
        let policy = self.state.read().config.flush;
        if policy != FlushPolicy::Always {
            return if self.is_poisoned() {
                Err(FlushError::Poisoned)
            } else {
                Ok(())
            };
        }
        self.sync_now(end_offset)
    }

    fn sync_now(&self, end_offset: u64) -> Result<(), FlushError> {
        if self.is_poisoned() {
            return Err(FlushError::Poisoned);
        }
        if self.durable_end.load(Ordering::SeqCst) >= end_offset {
            return Ok(());
        }
        // Become the leader, or wait for the fsync in progress; every waiter it covers leaves
        // at once when it ends (notify_all), instead of handing a lock on one by one.
        {
            let mut in_progress = self.sync_state.lock();
            loop {
                if self.durable_end.load(Ordering::SeqCst) >= end_offset {
                    return Ok(());
                }
                if self.is_poisoned() {
                    return Err(FlushError::Poisoned);
                }
                if !*in_progress {
                    *in_progress = true;
                    break;
                }
                self.sync_done.wait(&mut in_progress);
            }
        }
        let result = self.lead_fsync();
        *self.sync_state.lock() = false;
        self.sync_done.notify_all();
        result
    }

    /// One group commit: fsync the active segment, covering everything appended before it began.
    fn lead_fsync(&self) -> Result<(), FlushError> {
        // Appenders just released by the previous fsync are about to append and wait again; let
        // them run first so this fsync covers them too instead of starting a round of its own.
        // (A yield, not a sleep: it costs nothing when no one else is runnable.)
        std::thread::yield_now();
        let (file, target) = {
            let st = self.state.read();
            match st.segments.last() {
                Some(seg) => (self.file(seg.base, FileKind::Log)?, st.next_offset),
                None => return Ok(()),
            }
        };
        if let Err(e) = file.sync_data() {
            self.poison("fsync", &e);
            return Err(FlushError::Io(e));
        }
        self.durable_end.fetch_max(target, Ordering::SeqCst);
        self.group_commits.fetch_add(1, Ordering::Relaxed);
        self.last_flush_ms
            .store(self.env.clock.now_ms(), Ordering::SeqCst);
        Ok(())
    }

    /// Fsyncs everything appended so far, whatever the flush policy.
    pub fn flush(&self) -> Result<(), FlushError> {
        let end = self.state.read().next_offset;
        self.sync_now(end)
    }

    /// Whole batches starting with the one containing `offset`, up to `max_bytes` (the first batch
    /// whole even if larger when `at_least_one`, as Kafka's KIP-74), exactly as stored.
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<ReadOutcome, ReadError> {
        self.read_below(offset, u64::MAX, max_bytes, at_least_one)
    }

    /// What consumers may read: as [`read`](Self::read), but only batches wholly below
    /// [`Offsets::visible_end`], which is also the high watermark reported.
    pub fn read_visible(
        &self,
        offset: u64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<ReadOutcome, ReadError> {
        let end = self.offsets().visible_end;
        self.read_below(offset, end, max_bytes, at_least_one)
    }

    /// As [`read_visible`](Self::read_visible), but only batches wholly below `stable_end` too
    /// (a read_committed consumer's last stable offset); the reported high watermark is that
    /// bound when it is lower.
    pub fn read_visible_below(
        &self,
        offset: u64,
        stable_end: u64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<ReadOutcome, ReadError> {
        let end = self.offsets().visible_end.min(stable_end);
        self.read_below(offset, end, max_bytes, at_least_one)
    }

    /// [`read`](Self::read) of the batches wholly below `end` (the log end if lower), which is
    /// reported as the high watermark; an offset from `end` up to the log end reads nothing,
    /// one past the log end is out of range.
    fn read_below(
        &self,
        offset: u64,
        end: u64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<ReadOutcome, ReadError> {
        let start = match self.read_start(offset, end)? {
            Start::Nothing {
                high_watermark,
                log_start,
            } => {
                return Ok(ReadOutcome {
                    batches: Bytes::new(),
                    high_watermark,
                    log_start,
                });
            }
            Start::At(start) => start,
        };
        Ok(ReadOutcome {
            batches: start.read_bytes(max_bytes, at_least_one)?,
            high_watermark: start.high_watermark,
            log_start: start.log_start,
        })
    }

    /// Finds where a read of `offset` bounded by `end` starts: the segment file and the
    /// position of the batch holding `offset` (or nothing to read).
    fn read_start(&self, offset: u64, end: u64) -> Result<Start, ReadError> {
        // A compacted segment may end before its offset range does: an offset in such a gap is
        // read from the next segment on.
        let mut offset = offset;
        loop {
            let (seg_base, size, seg_next, file, start_pos, hw, log_start) = {
                let st = self.state.read();
                let (hw, log_start) = (end.min(st.next_offset), st.log_start);
                if offset < log_start || offset > st.next_offset {
                    return Err(ReadError::OffsetOutOfRange {
                        log_start,
                        high_watermark: hw,
                    });
                }
                if offset >= hw {
                    return Ok(Start::Nothing {
                        high_watermark: hw,
                        log_start,
                    });
                }
                let i = st.segments.partition_point(|s| s.base <= offset).max(1) - 1;
                let seg = &st.segments[i];
                let rel = (offset - seg.base) as u32;
                // The files are taken under the lock: a cleaner swap replaces a closed
                // segment's files under the write lock, and the sizes read here are theirs.
                let file = self.read_file(seg.base, FileKind::Log)?;
                let start_pos = match seg.active.as_ref() {
                    Some(idx) => u64::from(idx.lookup(rel)),
                    None => u64::from(index::file_lookup(
                        self.read_file(seg.base, FileKind::Index)?.as_ref(),
                        seg.offset_entries,
                        rel,
                        seg.size,
                    )?),
                };
                (
                    seg.base,
                    seg.size,
                    seg.next_offset,
                    file,
                    start_pos,
                    hw,
                    log_start,
                )
            };
            let corrupt = |position, reason| ReadError::Corrupt {
                segment_base: seg_base,
                position,
                reason,
            };
            // Walk batch headers from the indexed position to the batch holding `offset`.
            let mut pos = start_pos;
            let mut head = [0u8; 27];
            let found = loop {
                if pos + head.len() as u64 > size {
                    break None;
                }
                read_exact_at(file.as_ref(), &mut head, pos)?;
                let len = batch::announced_len(&head)
                    .filter(|l| pos + *l as u64 <= size && *l >= BATCH_HEADER_BYTES)
                    .ok_or_else(|| corrupt(pos, "bad batch length"))?;
                let base = i64::from_be_bytes(head[0..8].try_into().unwrap_or_default());
                let delta = i32::from_be_bytes(head[23..27].try_into().unwrap_or_default());
                let last = base.saturating_add(i64::from(delta));
                if last >= 0 && last as u64 >= offset {
                    break Some(len);
                }
                pos += len as u64;
            };
            match found {
                Some(first_len) => {
                    return Ok(Start::At(ReadStart {
                        file,
                        segment_base: seg_base,
                        size,
                        pos,
                        first_len,
                        high_watermark: hw,
                        log_start,
                    }));
                }
                // A gap running past what readers may see yet reads as nothing.
                None if pos == size && seg_next > offset && seg_next > hw => {
                    return Ok(Start::Nothing {
                        high_watermark: hw,
                        log_start,
                    });
                }
                None if pos == size && seg_next > offset => offset = seg_next,
                None => return Err(corrupt(pos, "offset not found where the index points")),
            }
        }
    }

    /// The log start, high watermark and durable end.
    pub fn offsets(&self) -> Offsets {
        let st = self.state.read();
        let durable_end = self.durable_end.load(Ordering::SeqCst).min(st.next_offset);
        Offsets {
            log_start: st.log_start,
            high_watermark: st.next_offset,
            durable_end,
            visible_end: match st.config.flush {
                FlushPolicy::Always => durable_end,
                FlushPolicy::IntervalMs(_) | FlushPolicy::Never => st.next_offset,
            },
        }
    }

    /// First offset whose record timestamp is >= `ts_ms`, with that timestamp (Kafka ListOffsets).
    ///
    /// Segments and the time index narrow the search by batch max timestamps; the records of the
    /// candidate batches are then decoded (decompressing if needed) for the exact record. A batch
    /// whose records cannot be decoded answers with its base offset and max timestamp.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<(u64, i64)>, ReadError> {
        // The search reads segment files outside the state lock; a cleaner swap in between
        // replaces files under it, so a search that overlapped one is done again.
        let mut tries = 0;
        loop {
            let epoch = self.swaps.load(Ordering::SeqCst);
            let found = self.offset_for_timestamp_once(ts_ms);
            tries += 1;
            if self.swaps.load(Ordering::SeqCst) == epoch || tries >= SEARCH_TRIES_MAX {
                return found;
            }
        }
    }

    fn offset_for_timestamp_once(&self, ts_ms: i64) -> Result<Option<(u64, i64)>, ReadError> {
        struct Candidate {
            base: u64,
            size: u64,
            /// Known start position (active segment) or to be looked up in the index files.
            start: Option<u32>,
            time_entries: u64,
            offset_entries: u64,
        }
        let (candidates, log_start) = {
            let st = self.state.read();
            let log_start = st.log_start;
            let mut out = Vec::new();
            for seg in &st.segments {
                if seg.max_timestamp < ts_ms || seg.next_offset <= log_start || seg.size == 0 {
                    continue;
                }
                let start = seg.active.as_ref().map(|idx| {
                    let rel = idx.lookup_time(ts_ms);
                    let min_rel = log_start.saturating_sub(seg.base) as u32;
                    idx.lookup(rel.max(min_rel))
                });
                out.push(Candidate {
                    base: seg.base,
                    size: seg.size,
                    start,
                    time_entries: seg.time_entries,
                    offset_entries: seg.offset_entries,
                });
            }
            (out, log_start)
        };
        for c in candidates {
            let log = self.read_file(c.base, FileKind::Log)?;
            let mut pos = match c.start {
                Some(p) => u64::from(p),
                None => {
                    let time = self.read_file(c.base, FileKind::Time)?;
                    let rel = index::file_lookup_time(time.as_ref(), c.time_entries, ts_ms)?;
                    let min_rel = log_start.saturating_sub(c.base) as u32;
                    u64::from(index::file_lookup(
                        self.read_file(c.base, FileKind::Index)?.as_ref(),
                        c.offset_entries,
                        rel.max(min_rel),
                        c.size,
                    )?)
                }
            };
            let mut head = [0u8; BATCH_HEADER_BYTES];
            while pos + BATCH_HEADER_BYTES as u64 <= c.size {
                read_exact_at(log.as_ref(), &mut head, pos)?;
                let Some(h) = batch::parse_header(&head) else {
                    return Err(ReadError::Corrupt {
                        segment_base: c.base,
                        position: pos,
                        reason: "bad batch header",
                    });
                };
                if pos + h.total_bytes as u64 > c.size {
                    return Err(ReadError::Corrupt {
                        segment_base: c.base,
                        position: pos,
                        reason: "batch runs past the segment end",
                    });
                }
                let last = h.last_offset();
                if h.max_timestamp_known() >= ts_ms && last >= 0 && last as u64 >= log_start {
                    let mut whole = vec![0u8; h.total_bytes];
                    read_exact_at(log.as_ref(), &mut whole, pos)?;
                    match records::first_at_or_after(&whole, &h, ts_ms, log_start) {
                        Ok(Some(found)) => return Ok(Some(found)),
                        Ok(None) => {}
                        Err(records::DecodeFault) => {
                            let first = (h.base_offset.max(0) as u64).max(log_start);
                            return Ok(Some((first, h.max_timestamp)));
                        }
                    }
                }
                pos += h.total_bytes as u64;
            }
        }
        Ok(None)
    }

    /// The first record carrying the log's largest known timestamp, as (offset, timestamp)
    /// (Kafka's ListOffsets `MAX_TIMESTAMP`); `None` when no record above the log start has a
    /// timestamp.
    pub fn offset_of_max_timestamp(&self) -> Result<Option<(u64, i64)>, ReadError> {
        let max = {
            let st = self.state.read();
            st.segments
                .iter()
                .filter(|seg| seg.next_offset > st.log_start && seg.size > 0)
                .map(|seg| seg.max_timestamp)
                .max()
                .unwrap_or(NO_TIMESTAMP)
        };
        if max == NO_TIMESTAMP {
            return Ok(None);
        }
        self.offset_for_timestamp(max)
    }

    /// DeleteRecords: moves the log start to `offset` (persisted before returning) and deletes
    /// whole segments below it. Returns the new log start.
    pub fn delete_records_before(&self, offset: u64) -> Result<u64, DeleteRecordsError> {
        let mut st = self.state.write();
        if self.is_poisoned() {
            return Err(DeleteRecordsError::Poisoned);
        }
        if self.is_retired() {
            return Err(DeleteRecordsError::Deleted);
        }
        if offset > st.next_offset {
            return Err(DeleteRecordsError::OffsetOutOfRange {
                log_start: st.log_start,
                high_watermark: st.next_offset,
            });
        }
        if offset <= st.log_start {
            return Ok(st.log_start);
        }
        st.log_start = offset;
        // The checkpoint fsyncs the records below the new start first, so a power loss can
        // never leave a log start above the log end.
        if let Err(e) = self.checkpoint_locked(&mut st) {
            self.poison("checkpoint write", &e);
            return Err(DeleteRecordsError::Io(e));
        }
        // An active segment wholly below the new start is rolled so it can go too.
        let active_below = st
            .segments
            .last()
            .is_some_and(|s| s.size > 0 && s.next_offset <= offset);
        if active_below {
            if let Err(e) = self.roll_locked(&mut st) {
                self.poison("segment roll", &e);
                return Err(DeleteRecordsError::Io(e));
            }
        }
        let n = st
            .segments
            .iter()
            .take(st.segments.len() - 1)
            .take_while(|s| s.next_offset <= offset)
            .count();
        self.delete_segments_locked(&mut st, n)?;
        st.producers.truncate_head(offset);
        Ok(st.log_start)
    }

    /// Replaces the configuration (AlterConfigs); applies to later appends and maintenance.
    pub fn set_config(&self, config: LogConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let mut st = self.state.write();
        let interval = u64::from(config.index_interval_bytes);
        if let Some(idx) = st.segments.last_mut().and_then(|s| s.active.as_mut()) {
            idx.interval_bytes = interval;
        }
        st.config = config;
        Ok(())
    }

    /// The current configuration.
    pub fn config(&self) -> LogConfig {
        self.state.read().config.clone()
    }

    /// Counters since the log was opened.
    pub fn stats(&self) -> LogStats {
        LogStats {
            appends: self.appends.load(Ordering::Relaxed),
            group_commits: self.group_commits.load(Ordering::Relaxed),
        }
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.state.read().segments.iter().map(|s| s.size).sum()
    }

    /// Housekeeping to call periodically (e.g. every second): interval flush when due, time-based
    /// roll, retention by time and size (whole closed segments), and the recovery checkpoint.
    pub fn maintain(&self) -> Result<MaintainOutcome, MaintainError> {
        self.maintain_with(true)
    }

    /// [`PartitionLog::maintain`], with retention only when `retention` is true: a caller can
    /// keep the tight beat flushes and checkpoints need and check retention less often, as
    /// Kafka does (`log.retention.check.interval.ms`, 5 minutes by default).
    pub fn maintain_with(&self, retention: bool) -> Result<MaintainOutcome, MaintainError> {
        if self.is_poisoned() {
            return Err(MaintainError::Poisoned);
        }
        let mut out = MaintainOutcome::default();
        let now = self.env.clock.now_ms();
        let last_flush = self.last_flush_ms.load(Ordering::SeqCst);
        let (policy, hw) = {
            let st = self.state.read();
            (st.config.flush, st.next_offset)
        };
        if let FlushPolicy::IntervalMs(ms) = policy {
            if elapsed_ms(now, last_flush) >= ms && self.durable_end.load(Ordering::SeqCst) < hw {
                self.sync_now(hw)?;
                out.flushed = true;
            }
        }
        let mut st = self.state.write();
        if self.is_retired() {
            return Ok(out);
        }
        let cfg = st.config.clone();
        if let Some(active) = st.segments.last() {
            // A compacted log's records must reach a closed segment to be cleaned in time.
            let roll_after_ms = if cfg.cleanup_policy.compacts() {
                cfg.segment_ms.min(cfg.max_compaction_lag_ms)
            } else {
                cfg.segment_ms
            };
            let aged = active
                .roll_base_ms
                .is_some_and(|t| elapsed_ms(now, t) >= roll_after_ms);
            let expired = retention
                && cfg.cleanup_policy.deletes()
                && cfg
                    .retention_ms
                    .is_some_and(|r| elapsed_ms(now, active.retention_ts()) > r);
            if active.size > 0 && (aged || expired) {
                if let Err(e) = self.roll_locked(&mut st) {
                    self.poison("segment roll", &e);
                    return Err(MaintainError::Io(e));
                }
                out.rolled = true;
            }
        }
        // Retention: a prefix of closed segments, oldest first (wholly below the log start, or
        // expired under a deleting policy), left alone while a cleaner pass runs.
        let idle = !self.cleaning.load(Ordering::SeqCst);
        let closed = if retention && idle {
            st.segments.len() - 1
        } else {
            0
        };
        let deletes = cfg.cleanup_policy.deletes();
        let log_start = st.log_start;
        let mut total: u64 = st.segments.iter().map(|s| s.size).sum();
        let mut n = 0;
        while n < closed {
            let seg = &st.segments[n];
            let by_time = deletes
                && cfg
                    .retention_ms
                    .is_some_and(|r| elapsed_ms(now, seg.retention_ts()) > r);
            let by_size = deletes
                && cfg
                    .retention_bytes
                    .is_some_and(|r| total.saturating_sub(seg.size) >= r);
            let below_start = seg.next_offset <= log_start;
            if !(by_time || by_size || below_start) {
                break;
            }
            total -= seg.size;
            out.bytes_deleted += seg.size;
            n += 1;
        }
        if n > 0 {
            self.delete_segments_locked(&mut st, n)
                .map_err(|e| match e {
                    DeleteRecordsError::Poisoned => MaintainError::Poisoned,
                    DeleteRecordsError::Io(e) => MaintainError::Io(e),
                    DeleteRecordsError::OffsetOutOfRange { .. } | DeleteRecordsError::Deleted => {
                        MaintainError::Poisoned
                    }
                })?;
            out.segments_deleted = n;
            let start = st.log_start;
            st.producers.truncate_head(start);
        }
        // How far the active segment has grown past the last checkpoint (rolls checkpoint, so
        // a checkpoint in an earlier segment means the whole active one is unchecked).
        let lag_bytes = st.segments.last().map_or(0, |s| {
            if st.last_checkpoint.segment_base == s.base {
                s.size.saturating_sub(st.last_checkpoint.position)
            } else {
                s.size
            }
        });
        let behind = st.segments.last().is_some_and(|s| {
            st.last_checkpoint.segment_base != s.base || st.last_checkpoint.position != s.size
        });
        let due = elapsed_ms(now, st.last_checkpoint_ms) >= cfg.checkpoint_interval_ms
            || lag_bytes >= CHECKPOINT_LAG_BYTES_MAX;
        if behind && due {
            if let Err(e) = self.checkpoint_locked(&mut st) {
                self.poison_checkpoint(&e);
                return Err(MaintainError::Io(e));
            }
            out.checkpointed = true;
        }
        Ok(out)
    }

    /// Retires the log before its directory is moved aside or removed (a deleted partition):
    /// once this returns, no append, retention, roll or checkpoint touches the directory, and
    /// appends fail with [`AppendError::Deleted`]. Reads of open files go on working.
    pub fn retire(&self) {
        let _st = self.state.write();
        self.retired.store(true, Ordering::SeqCst);
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Flushes everything, writes a checkpoint so the next open scans nothing, and closes.
    pub fn close(self) -> Result<(), FlushError> {
        self.close_inner()
    }

    fn close_inner(&self) -> Result<(), FlushError> {
        if self.is_poisoned() {
            return Err(FlushError::Poisoned);
        }
        let mut st = self.state.write();
        if self.is_retired() {
            return Ok(());
        }
        // Space reserved past the end goes with a clean close (the checkpoint's fsync makes the
        // length durable), so a clean reopen finds the file as it left it and writes nothing.
        let mut cut = false;
        if let Some(seg) = st.segments.last_mut().filter(|s| s.allocated > s.size) {
            let file = self.file(seg.base, FileKind::Log).map_err(FlushError::Io)?;
            file.set_len(seg.size).map_err(FlushError::Io)?;
            seg.allocated = seg.size;
            cut = true;
        }
        let behind = st.segments.last().is_some_and(|s| {
            st.last_checkpoint.segment_base != s.base || st.last_checkpoint.position != s.size
        });
        if behind || cut {
            if let Err(e) = self.checkpoint_locked(&mut st) {
                self.poison_checkpoint(&e);
                return Err(FlushError::Io(e));
            }
        }
        Ok(())
    }

    /// Deletes the first `n` segments (never the active one) and advances the log start.
    fn delete_segments_locked(&self, st: &mut State, n: usize) -> Result<(), DeleteRecordsError> {
        let n = n.min(st.segments.len().saturating_sub(1));
        // A cleaner pass is rewriting closed segments; they go after it (`maintain` deletes
        // what is below the log start).
        if n == 0 || self.cleaning.load(Ordering::SeqCst) {
            return Ok(());
        }
        let gone: Vec<Segment> = st.segments.drain(..n).collect();
        if let Some(first) = st.segments.first() {
            st.log_start = st.log_start.max(first.base);
        }
        // Open readers keep their file handles; removing the names frees the space after them.
        for seg in gone {
            self.forget_segment(seg.base);
            for p in [
                log_path(&self.dir, seg.base),
                index_path(&self.dir, seg.base),
                time_path(&self.dir, seg.base),
            ] {
                match self.env.fs.remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(DeleteRecordsError::Io(e)),
                }
            }
        }
        if let Err(e) = self.env.fs.sync_dir(&self.dir) {
            self.poison("directory fsync", &e);
            return Err(DeleteRecordsError::Io(e));
        }
        Ok(())
    }

    /// Closes the active segment (fsynced with its indexes) and starts a new one at the log end.
    fn roll_locked(&self, st: &mut State) -> std::io::Result<()> {
        let interval = u64::from(st.config.index_interval_bytes);
        let next = st.next_offset;
        if let Some(seg) = st.segments.last_mut() {
            if seg.size == 0 {
                return Ok(());
            }
            let base = seg.base;
            let files = self.seg_files(base)?;
            close_segment(seg, &files)?;
        }
        let seg = create_segment(&self.env, &self.dir, next, interval, |kind, path| {
            let key = FileKey {
                owner: self.owner,
                base: next,
                kind,
            };
            self.env.files.get(key, || path.to_path_buf(), true)
        })?;
        st.segments.push(seg);
        self.durable_end.fetch_max(next, Ordering::SeqCst);
        self.checkpoint_locked(st)
    }

    /// Writes out the active indexes, fsyncs the active segment and records a checkpoint at its end.
    fn checkpoint_locked(&self, st: &mut State) -> std::io::Result<()> {
        let Some(seg) = st.segments.last_mut() else {
            return Ok(());
        };
        let files = self.seg_files(seg.base)?;
        if let Some(idx) = seg.active.as_mut() {
            idx.write_pending(files.index.as_ref(), files.time.as_ref())?;
        }
        files.log.sync_data()?;
        files.index.sync_data()?;
        files.time.sync_data()?;
        let cp = Checkpoint {
            log_start: st.log_start,
            segment_base: seg.base,
            position: seg.size,
            next_offset: seg.next_offset,
            max_timestamp: seg.max_timestamp,
            producers: st.producers.clone(),
        };
        checkpoint::write(self.env.fs.as_ref(), &self.dir, &cp)?;
        self.durable_end.fetch_max(cp.next_offset, Ordering::SeqCst);
        st.last_checkpoint = cp;
        st.last_checkpoint_ms = self.env.clock.now_ms();
        Ok(())
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "log closed without a final checkpoint; the next open will scan its tail");
        }
        let bases: Vec<u64> = self
            .state
            .get_mut()
            .segments
            .iter()
            .map(|s| s.base)
            .collect();
        for base in bases {
            self.forget_segment(base);
        }
    }
}

/// Refuses batches holding a record without a key, for a compacted log (control batches hold
/// transaction markers, not data, and pass).
fn check_keys(batches: &[u8], headers: &[BatchHeader]) -> Result<(), AppendError> {
    let mut pos = 0;
    for h in headers {
        let batch = &batches[pos..pos + h.total_bytes];
        if h.attributes & batch::CONTROL_BIT == 0 {
            let undecodable = |_| AppendError::CorruptBatch {
                position: pos,
                reason: "records could not be decoded",
            };
            let records = records::uncompressed_records(batch, h).map_err(undecodable)?;
            let refs = records::parse_records(&records, h.records_count).map_err(undecodable)?;
            let keyless: Vec<u32> = (0u32..)
                .zip(&refs)
                .filter(|(_, r)| r.key.is_none())
                .map(|(i, _)| i)
                .collect();
            if !keyless.is_empty() {
                return Err(AppendError::KeylessRecord {
                    position: pos,
                    records: keyless,
                });
            }
        }
        pos += h.total_bytes;
    }
    Ok(())
}

/// Turns the active segment into a closed one: final time entry, indexes written, all fsynced.
fn close_segment(seg: &mut Segment, files: &SegFiles) -> std::io::Result<()> {
    if seg.allocated > seg.size {
        // A closed segment's length is its data: recovery trusts it without reading.
        files.log.set_len(seg.size)?;
        seg.allocated = seg.size;
    }
    if let Some(mut idx) = seg.active.take() {
        if seg.size > 0 {
            let last_rel = (seg.next_offset - 1 - seg.base) as u32;
            idx.push_time(seg.max_timestamp, last_rel);
        }
        idx.write_pending(files.index.as_ref(), files.time.as_ref())?;
        seg.offset_entries = idx.offsets.len() as u64;
        seg.time_entries = idx.times.len() as u64;
    }
    files.log.sync_data()?;
    files.index.sync_data()?;
    files.time.sync_data()?;
    Ok(())
}

/// Creates a segment's three files (opened by `open`) empty, and makes them durable in `dir`.
fn create_segment(
    env: &Env,
    dir: &Path,
    base: u64,
    interval: u64,
    open: impl Fn(FileKind, &Path) -> std::io::Result<Arc<dyn StorageFile>>,
) -> std::io::Result<Segment> {
    let files = SegFiles {
        log: open(FileKind::Log, &log_path(dir, base))?,
        index: open(FileKind::Index, &index_path(dir, base))?,
        time: open(FileKind::Time, &time_path(dir, base))?,
    };
    // A leftover file of the same name (from a log truncated below it) must not leak bytes in.
    files.log.set_len(0)?;
    files.index.set_len(0)?;
    files.time.set_len(0)?;
    env.fs.sync_dir(dir)?;
    Ok(Segment {
        base,
        size: 0,
        next_offset: base,
        max_timestamp: -1,
        roll_base_ms: None,
        touched_ms: env.clock.now_ms(),
        active: Some(ActiveIndex {
            interval_bytes: interval,
            ..ActiveIndex::default()
        }),
        offset_entries: 0,
        time_entries: 0,
        allocated: 0,
    })
}

/// The least a reserve grows by: a partition that is written rarely holds this much, not
/// `preallocate_bytes`, so many idle partitions do not fill a disk with reserved blocks.
const PREALLOCATE_STEP_MIN_BYTES: u64 = 64 << 10;

/// Reserves the active segment's space ahead of an append of `bytes` that would pass what is
/// reserved: as far ahead as the segment already holds, from `PREALLOCATE_STEP_MIN_BYTES` up
/// to `config.preallocate_bytes`, so the reserve follows the partition's write rate. A file
/// system that cannot, or an error (no space: the write reports it), leaves the segment
/// growing with its writes until it closes; nothing was written, so nothing is lost either way.
fn preallocate(config: &LogConfig, seg: &mut Segment, bytes: u64, file: &dyn StorageFile) {
    let end = seg.size + bytes;
    if config.preallocate_bytes == 0 || end <= seg.allocated {
        return;
    }
    let ahead = seg
        .size
        .max(PREALLOCATE_STEP_MIN_BYTES)
        .min(config.preallocate_bytes);
    let to = end.saturating_add(ahead).min(config.segment_bytes.max(end));
    seg.allocated = match file.preallocate(seg.allocated.max(seg.size), to) {
        Ok(true) => to,
        Ok(false) => u64::MAX,
        Err(error) => {
            tracing::debug!(base = seg.base, %error, "preallocating segment space failed");
            u64::MAX
        }
    };
}
