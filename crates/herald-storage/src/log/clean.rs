//! The log cleaner: compacts a log's closed segments to the latest record per key
//! (`cleanup.policy=compact`), writes the cleaned segments aside and swaps them in so that a
//! crash at any point leaves either the old or the new segments (`docs/storage-format.md`,
//! "Compaction").
//!
//! One pass ([`PartitionLog::clean_below`]): pass 1 reads the dirty part of the closed segments
//! (from the cleaner checkpoint on, below the caller's bound) into a bounded map key-hash ->
//! latest offset. A transaction's records wait beside the map until its marker says whether
//! they count: a commit puts them in, an abort drops them (and notes the aborted range), so an
//! aborted value never shadows a committed one. Where the map fills up, pass 1 reads on for
//! the markers of the transactions still open there; the map stops before any transaction
//! whose marker it did not find. Pass 2 rewrites every closed segment up to where the map
//! stopped, dropping a record if a later record of its key is in the map, if it is a
//! tombstone older than `delete_retention_ms`, or if its transaction aborted; it drops a
//! marker once no record of its transaction was left when the pass began, consumers had
//! `delete_retention_ms` to read it and (for an abort) the caller no longer lists the aborted
//! transaction. A producer's last batch stays, emptied of its records, so its sequence numbers
//! can be rebuilt from the log. Adjacent segments are merged into one while they fit in
//! `segment_bytes`. Batches keep their base offset and last offset delta, so offsets keep
//! their gaps.
//!
//! Every record below the cleaner checkpoint has been through a pass, so no transaction below
//! it is undecided, and none aborted has records left: a transactional record found there
//! belongs to a committed transaction.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{PartitionLog, Segment, elapsed_ms, index_path, log_path, time_path};
use crate::batch::{
    self, BATCH_HEADER_BYTES, BatchHeader, CONTROL_BIT, Marker, NO_TIMESTAMP, TIMESTAMP_TYPE_BIT,
    TRANSACTIONAL_BIT,
};
use crate::env::{FileSystem, StorageFile};
use crate::error::CleanError;
use crate::files::FileKind;
use crate::index::ActiveIndex;
use crate::records;

/// The persisted cleaner checkpoint: every record below its offset has been through a pass.
pub(crate) const CLEANER_CHECKPOINT_FILE: &str = "cleaner-checkpoint";
pub(crate) const CLEANER_CHECKPOINT_TMP_FILE: &str = "cleaner-checkpoint.tmp";
/// The swap manifest: its presence is the commit point of a pass.
pub(crate) const SWAP_FILE: &str = "clean.swap";
pub(crate) const SWAP_TMP_FILE: &str = "clean.swap.tmp";
/// Suffix of the segment files a pass writes aside.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";

const CLEANER_CHECKPOINT_MAGIC: &[u8; 4] = b"HRCL";
const SWAP_MAGIC: &[u8; 4] = b"HRSW";
/// Version of the swap manifest.
const FORMAT_VERSION: u16 = 1;
/// Version of the cleaner checkpoint. Version 1 was written by a cleaner that kept
/// transactional batches and markers as they were: below it an aborted transaction may still
/// have records, so such a log is cleaned again from its start (its gaps are still accepted).
const CLEANER_CHECKPOINT_VERSION: u16 = 2;
const CLEANER_CHECKPOINT_VERSION_KEPT_TRANSACTIONS: u16 = 1;
const CLEANER_CHECKPOINT_BYTES: usize = 20;
const _: () = assert!(CLEANER_CHECKPOINT_BYTES == 4 + 2 + 2 + 8 + 4);
/// A manifest longer than this is damage, not a pass (a group per segment of a huge log is far
/// less).
const SWAP_BYTES_MAX: u64 = 64 << 20;

/// Memory one key map entry may take (16-byte key hash, 8-byte offset, and the hash table's
/// control byte and spare capacity): `dedupe_buffer_bytes / KEY_MAP_ENTRY_BYTES` keys fit.
pub const KEY_MAP_ENTRY_BYTES: u64 = 72;
/// Default memory for the key map of one pass.
pub const DEFAULT_DEDUPE_BUFFER_BYTES: u64 = 128 << 20;
/// Bytes read from a segment at a time.
const READ_CHUNK_BYTES: usize = 1 << 20;
/// Bytes of cleaned batches buffered before they are written out.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// Limits the cleaner's I/O to a rate shared by every log it cleans.
///
/// ```
/// use herald_storage::Throttle;
/// let throttle = Throttle::new(None); // unlimited
/// throttle.consume(1 << 20);
/// ```
#[derive(Debug)]
pub struct Throttle {
    bytes_per_s: Option<u64>,
    /// Start of the current window and the bytes consumed in it.
    window: Mutex<(Instant, u64)>,
}

impl Throttle {
    /// A throttle allowing `bytes_per_s` (unlimited when `None` or 0).
    pub fn new(bytes_per_s: Option<u64>) -> Throttle {
        Throttle {
            bytes_per_s: bytes_per_s.filter(|r| *r > 0),
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Accounts for `bytes` of I/O, sleeping as long as needed to stay under the rate.
    pub fn consume(&self, bytes: u64) {
        let Some(rate) = self.bytes_per_s else {
            return;
        };
        let wait = {
            let mut window = self.window.lock();
            let (start, used) = &mut *window;
            let elapsed = start.elapsed();
            let allowed = Duration::from_secs_f64(*used as f64 / rate as f64);
            // An idle cleaner does not bank credit for a later burst.
            if elapsed > allowed + Duration::from_secs(1) {
                *start = Instant::now();
                *used = 0;
            }
            *used += bytes;
            let due = Duration::from_secs_f64(*used as f64 / rate as f64);
            due.checked_sub(start.elapsed())
        };
        if let Some(wait) = wait {
            std::thread::sleep(wait);
        }
    }
}

/// How dirty a compacted log is: what a scheduler needs to pick the log to clean next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cleanable {
    /// Bytes of cleanable closed segments not yet through a pass.
    pub dirty_bytes: u64,
    /// Bytes of all cleanable closed segments.
    pub cleanable_bytes: u64,
    /// Every record below this offset has been through a pass (the cleaner checkpoint).
    pub cleaned_to: u64,
    /// The log should be cleaned now: its dirty ratio reached `min_cleanable_dirty_ratio_ppm`,
    /// or a dirty record is older than `max_compaction_lag_ms`.
    pub due: bool,
}

impl Cleanable {
    /// Dirty bytes per million cleanable bytes.
    pub fn dirty_ratio_ppm(&self) -> u64 {
        (u128::from(self.dirty_bytes) * 1_000_000)
            .checked_div(u128::from(self.cleanable_bytes))
            .map_or(0, |r| r as u64)
    }
}

/// What the owner of a log knows of its transactions, which bounds a cleaner pass (the log
/// itself finds each transaction's outcome in its markers, and nothing else).
///
/// ```
/// use herald_storage::CleanBounds;
/// // A broker cleans below its last stable offset, and keeps the abort markers of the
/// // aborted transactions it still lists to read_committed consumers.
/// let listed = |producer_id: i64, offset: u64| producer_id == 7 && offset == 120;
/// let bounds = CleanBounds { below: 100, abort_listed: &listed };
/// assert!((bounds.abort_listed)(7, 120));
/// ```
#[derive(Clone, Copy)]
pub struct CleanBounds<'a> {
    /// No segment holding an offset at or above this one is cleaned: a broker passes the
    /// first offset of the earliest transaction still open on the partition, or the log end
    /// it read before looking for one (a transaction that opens later starts above it).
    pub below: u64,
    /// Whether the aborted transaction whose abort marker is (producer id, offset) is still
    /// listed to read_committed consumers. Such a marker stays: a consumer told of the
    /// aborted transaction skips that producer's transactional records until it reads the
    /// marker.
    pub abort_listed: &'a dyn Fn(i64, u64) -> bool,
}

impl CleanBounds<'_> {
    /// No bound: a log without a transaction coordinator (every transaction whose marker is
    /// in the log is decided; one without a marker is left alone).
    pub fn none() -> CleanBounds<'static> {
        CleanBounds {
            below: u64::MAX,
            abort_listed: &never_listed,
        }
    }
}

fn never_listed(_producer_id: i64, _offset: u64) -> bool {
    false
}

impl std::fmt::Debug for CleanBounds<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CleanBounds")
            .field("below", &self.below)
            .finish_non_exhaustive()
    }
}

/// An abort marker, by producer id and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AbortMarker {
    pub producer_id: i64,
    pub offset: u64,
}

/// What one cleaner pass did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CleanOutcome {
    /// Segments were rewritten and swapped in.
    pub swapped: bool,
    /// Bytes read (both the key map scan and the rewrite).
    pub bytes_read: u64,
    /// Bytes of the segments rewritten, before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Records removed.
    pub records_removed: u64,
    /// Segments rewritten (merged ones counted each).
    pub segments_cleaned: usize,
    /// The cleaner checkpoint after the pass.
    pub cleaned_to: u64,
    /// Dirty records are left past where the key map filled up: another pass is due.
    pub more: bool,
    /// Transaction markers removed (counted in `records_removed` too).
    pub markers_removed: u64,
    /// Abort markers the caller lists (see [`CleanBounds::abort_listed`]) of which no record
    /// is left after this pass: the caller can stop listing them, which lets a later pass
    /// remove the markers. At most as many as the caller lists.
    pub abort_markers_without_data: Vec<AbortMarker>,
    /// A transaction whose marker is not in the cleanable segments stopped the pass before
    /// its first record: the log is not due again until more segments become cleanable.
    pub held_back: bool,
}

/// A closed segment as a pass sees it.
#[derive(Debug, Clone, Copy)]
struct SegInfo {
    base: u64,
    size: u64,
    next_offset: u64,
    max_timestamp: i64,
    touched_ms: i64,
    retention_ts: i64,
}

/// Segments merged into one cleaned segment, named after the first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    bases: Vec<u64>,
    /// Offset after the group (the last segment's next offset).
    end: u64,
}

/// The key map: 128-bit key hash -> offset of the key's latest record.
type KeyMap = HashMap<u128, u64, BuildHasherDefault<KeyHashHasher>>;

/// The keys are hashes already: their low 64 bits index the table.
#[derive(Default)]
struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// Two independent 64-bit SipHashes of the key: a collision (which would drop a record of a
/// different key) needs 128 bits to agree.
fn key_hash(key: &[u8]) -> u128 {
    let mut a = std::hash::DefaultHasher::new();
    0u8.hash(&mut a);
    key.hash(&mut a);
    let mut b = std::hash::DefaultHasher::new();
    1u8.hash(&mut b);
    key.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// Clears the log's "a pass is running" flag when the pass ends, however it ends.
struct CleaningGuard<'a>(&'a AtomicBool);

impl Drop for CleaningGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn cleaned_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(CLEANED_SUFFIX);
    PathBuf::from(s)
}

/// Removes `path`, a missing file being fine.
fn remove_if_present(fs: &dyn FileSystem, path: &Path) -> std::io::Result<()> {
    match fs.remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads a segment's batches in order, in large chunks.
struct BatchReader<'a> {
    file: &'a dyn StorageFile,
    base: u64,
    size: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_pos: u64,
}

impl<'a> BatchReader<'a> {
    fn new(file: &'a dyn StorageFile, base: u64, size: u64) -> Self {
        BatchReader {
            file,
            base,
            size,
            pos: 0,
            buf: Vec::new(),
            buf_pos: 0,
        }
    }

    fn corrupt(&self, reason: &'static str) -> CleanError {
        CleanError::Corrupt {
            segment_base: self.base,
            position: self.pos,
            reason,
        }
    }

    /// Makes `[pos, pos + len)` available in the buffer.
    fn load(&mut self, pos: u64, len: usize) -> Result<(), CleanError> {
        let have = pos >= self.buf_pos && pos + len as u64 <= self.buf_pos + self.buf.len() as u64;
        if have {
            return Ok(());
        }
        let want = len.max(READ_CHUNK_BYTES).min((self.size - pos) as usize);
        self.buf.resize(want, 0);
        crate::env::read_exact_at(self.file, &mut self.buf, pos)?;
        self.buf_pos = pos;
        Ok(())
    }

    /// The next batch (its header and bytes), `None` at the segment's end.
    fn next_batch(&mut self) -> Result<Option<(BatchHeader, &[u8])>, CleanError> {
        if self.pos >= self.size {
            return Ok(None);
        }
        if self.pos + BATCH_HEADER_BYTES as u64 > self.size {
            return Err(self.corrupt("segment ends inside a batch header"));
        }
        self.load(self.pos, BATCH_HEADER_BYTES)?;
        let at = (self.pos - self.buf_pos) as usize;
        let h =
            batch::parse_header(&self.buf[at..]).ok_or_else(|| self.corrupt("bad batch header"))?;
        if h.total_bytes < BATCH_HEADER_BYTES || self.pos + h.total_bytes as u64 > self.size {
            return Err(self.corrupt("batch runs past the segment end"));
        }
        self.load(self.pos, h.total_bytes)?;
        let at = (self.pos - self.buf_pos) as usize;
        self.pos += h.total_bytes as u64;
        Ok(Some((h, &self.buf[at..at + h.total_bytes])))
    }
}

/// What the cleaner keeps of one batch.
enum Kept {
    All,
    Nothing { removed: u64 },
    Some { batch: Vec<u8>, removed: u64 },
}

/// A transaction pass 1 has read records of but not yet its marker.
struct OpenTxn {
    /// Offset of its first batch in the dirty part.
    first: u64,
    /// Its keyed records (key hash, offset): they enter the key map only if it commits.
    pending: Vec<(u128, u64)>,
}

/// Aborted transactions with records in the dirty part, per producer id: (offset of their
/// first batch there, offset of the abort marker), in log order.
type AbortedRanges = HashMap<i64, VecDeque<(u64, u64)>>;

/// What pass 1 learned.
struct Scan {
    map: KeyMap,
    /// Offset up to which the map covers the dirty records; every transaction with records
    /// below it is decided, by a marker pass 1 read.
    map_end: u64,
    aborted: AbortedRanges,
    /// A transaction whose marker was not found held `map_end` back to its first record.
    held_back: bool,
}

/// Pass 1's tables. Their entries together stay within the key map's budget: keys in the
/// map, records waiting for their transaction's marker, open transactions, aborted ranges.
#[derive(Default)]
struct ScanTables {
    map: KeyMap,
    open: HashMap<i64, OpenTxn>,
    pending: usize,
    aborted: AbortedRanges,
    aborted_count: usize,
}

impl ScanTables {
    fn entries(&self) -> usize {
        self.map.len() + self.pending + self.open.len() + self.aborted_count
    }

    /// A transaction's marker: a commit's records enter the map (where a later record of the
    /// same key already there stays), an abort's are dropped and its range noted.
    fn on_marker(&mut self, producer_id: i64, marker: Marker, offset: u64) {
        let Some(txn) = self.open.remove(&producer_id) else {
            // No record of this transaction in the dirty part: nothing to decide.
            return;
        };
        self.pending -= txn.pending.len();
        match marker {
            Marker::Commit => {
                for (hash, at) in txn.pending {
                    let latest = self.map.entry(hash).or_insert(at);
                    *latest = (*latest).max(at);
                }
            }
            Marker::Abort => {
                self.aborted
                    .entry(producer_id)
                    .or_default()
                    .push_back((txn.first, offset));
                self.aborted_count += 1;
            }
        }
    }
}

/// Whether a producer's transaction had records in what pass 2 read, and in what it kept.
#[derive(Debug, Clone, Copy, Default)]
struct TxnRecords {
    read: bool,
    kept: bool,
}

/// Pass 2's rules for which records stay, and what it saw of transactions on the way. Batches
/// must be fed in log order.
struct Rewrite<'a> {
    map: &'a KeyMap,
    /// Offset up to which the map covers the dirty records; batches from here on are copied.
    map_end: u64,
    /// Below this offset every transactional record belongs to a committed transaction.
    dirty_start: u64,
    now: i64,
    delete_retention_ms: u64,
    aborted: AbortedRanges,
    bounds: &'a CleanBounds<'a>,
    /// Producer id -> last offset of its last batch (the idempotent-producer state when the
    /// pass began, so at most `producers_max` entries).
    last_batches: HashMap<i64, u64>,
    /// Producers whose transaction has records in what was read, its marker not yet reached.
    in_txn: HashMap<i64, TxnRecords>,
    in_txn_max: usize,
    /// `in_txn` was full: a marker of a producer not in it may have records before it.
    in_txn_overflowed: bool,
    markers_removed: u64,
    abort_markers_without_data: Vec<AbortMarker>,
}

impl Rewrite<'_> {
    fn batch(
        &mut self,
        bytes: &[u8],
        h: &BatchHeader,
        seg: &SegInfo,
    ) -> Result<Kept, records::DecodeFault> {
        let base = h.base_offset as u64;
        let control = h.attributes & CONTROL_BIT != 0;
        let transactional = h.attributes & TRANSACTIONAL_BIT != 0;
        if base >= self.map_end {
            // Past what pass 1 decided: copied as it is (a later pass cleans it).
            if transactional && !control && h.records_count > 0 {
                self.note_txn(h.producer_id, true);
            }
            return Ok(Kept::All);
        }
        if control {
            return Ok(self.marker(bytes, h, seg));
        }
        if h.records_count <= 0 {
            // An emptied batch is needed only while it is its producer's last.
            return Ok(if self.is_last_of_producer(h) {
                Kept::All
            } else {
                Kept::Nothing { removed: 0 }
            });
        }
        let aborted = transactional && base >= self.dirty_start && self.is_aborted(h);
        let kept = if aborted {
            Kept::Nothing {
                removed: h.records_count as u64,
            }
        } else {
            self.records(bytes, h, seg)?
        };
        if transactional {
            self.note_txn(h.producer_id, !matches!(kept, Kept::Nothing { .. }));
        }
        match kept {
            // The producer's sequence numbers and epoch live on in its last batch's header.
            Kept::Nothing { removed } if self.is_last_of_producer(h) => Ok(Kept::Some {
                batch: batch::emptied(bytes, h),
                removed,
            }),
            kept => Ok(kept),
        }
    }

    fn is_last_of_producer(&self, h: &BatchHeader) -> bool {
        crate::producer::is_idempotent(h)
            && self.last_batches.get(&h.producer_id) == Some(&(h.last_offset() as u64))
    }

    /// Whether a transactional batch in the dirty part belongs to an aborted transaction: one
    /// whose range, among its producer's, starts at or before it and ends after it.
    fn is_aborted(&mut self, h: &BatchHeader) -> bool {
        let base = h.base_offset as u64;
        let Some(ranges) = self.aborted.get_mut(&h.producer_id) else {
            return false;
        };
        while ranges.front().is_some_and(|(_, marker)| *marker < base) {
            ranges.pop_front();
        }
        ranges.front().is_some_and(|(first, _)| *first <= base)
    }

    /// Notes that a producer's transaction had records in what was read (and in what is kept).
    fn note_txn(&mut self, producer_id: i64, kept: bool) {
        if let Some(t) = self.in_txn.get_mut(&producer_id) {
            t.kept |= kept;
        } else if self.in_txn.len() < self.in_txn_max {
            self.in_txn
                .insert(producer_id, TxnRecords { read: true, kept });
        } else {
            self.in_txn_overflowed = true;
        }
    }

    /// A control batch below the map's end: a marker goes once no record of its transaction
    /// was left when this pass began (so a consumer never meets a transaction's records
    /// without its marker, and the cleaner never meets them undecided), consumers had
    /// `delete_retention_ms` to read it since it was written, and, for an abort, the owner
    /// no longer lists the aborted transaction.
    fn marker(&mut self, bytes: &[u8], h: &BatchHeader, seg: &SegInfo) -> Kept {
        let Some(marker) = batch::marker(bytes, h) else {
            return Kept::All;
        };
        let (producer_id, offset) = (h.producer_id, h.base_offset as u64);
        let txn = match self.in_txn.remove(&producer_id) {
            Some(t) => t,
            // Without a note the producer may have had records here all the same.
            None if self.in_txn_overflowed => TxnRecords {
                read: true,
                kept: true,
            },
            None => TxnRecords::default(),
        };
        let listed = marker == Marker::Abort && (self.bounds.abort_listed)(producer_id, offset);
        if listed && !txn.kept {
            self.abort_markers_without_data.push(AbortMarker {
                producer_id,
                offset,
            });
        }
        let ts = h.max_timestamp_known();
        let ts = if ts > 0 { ts } else { seg.retention_ts };
        let expired = elapsed_ms(self.now, ts) > self.delete_retention_ms;
        if !txn.read && expired && !listed {
            self.markers_removed += 1;
            Kept::Nothing { removed: 1 }
        } else {
            Kept::All
        }
    }

    /// The records of a data batch that stay: the latest of each key (by the map), unless it
    /// is a tombstone past `delete_retention_ms`, and every record without a key.
    fn records(
        &self,
        bytes: &[u8],
        h: &BatchHeader,
        seg: &SegInfo,
    ) -> Result<Kept, records::DecodeFault> {
        let records = records::uncompressed_records(bytes, h)?;
        let refs = records::parse_records(&records, h.records_count)?;
        let base = h.base_offset as u64;
        let mut kept = Vec::with_capacity(refs.len());
        for r in &refs {
            let offset = base
                .checked_add_signed(r.offset_delta)
                .ok_or(records::DecodeFault)?;
            let Some((ks, ke)) = r.key else {
                // Records without a key cannot be compacted; they stay.
                kept.push(r);
                continue;
            };
            let superseded = self
                .map
                .get(&key_hash(&records[ks..ke]))
                .is_some_and(|latest| offset < *latest);
            if superseded {
                continue;
            }
            // A tombstone covered by the map is the latest of its key (everything older of it
            // goes in this pass or went in an earlier one); once consumers have had
            // `delete_retention_ms` to see it, it goes too.
            if r.value.is_none() && offset < self.map_end {
                let ts = if h.attributes & TIMESTAMP_TYPE_BIT != 0 {
                    h.max_timestamp
                } else {
                    h.base_timestamp.saturating_add(r.ts_delta)
                };
                let ts = if ts > 0 { ts } else { seg.retention_ts };
                if elapsed_ms(self.now, ts) > self.delete_retention_ms {
                    continue;
                }
            }
            kept.push(r);
        }
        let removed = (refs.len() - kept.len()) as u64;
        if removed == 0 {
            return Ok(Kept::All);
        }
        if kept.is_empty() {
            return Ok(Kept::Nothing { removed });
        }
        let mut body = Vec::with_capacity(records.len());
        for r in &kept {
            body.extend_from_slice(&records[r.start..r.end]);
        }
        let batch = batch::with_records(bytes, h, &body, kept.len() as i32)
            .map_err(|_| records::DecodeFault)?;
        Ok(Kept::Some { batch, removed })
    }
}

/// Writes one cleaned segment aside: `{base}.log.cleaned` and its two indexes.
struct CleanedWriter {
    base: u64,
    log: Arc<dyn StorageFile>,
    index: Arc<dyn StorageFile>,
    time: Arc<dyn StorageFile>,
    buf: Vec<u8>,
    written: u64,
    idx: ActiveIndex,
    max_timestamp: i64,
    last_rel: Option<u32>,
}

impl CleanedWriter {
    fn create(fs: &dyn FileSystem, dir: &Path, base: u64, interval: u64) -> std::io::Result<Self> {
        let open = |p: PathBuf| -> std::io::Result<Arc<dyn StorageFile>> {
            let f = fs.open(&cleaned_path(&p), true)?;
            // A leftover of an earlier failed pass must not leak bytes in.
            f.set_len(0)?;
            Ok(f)
        };
        Ok(CleanedWriter {
            base,
            log: open(log_path(dir, base))?,
            index: open(index_path(dir, base))?,
            time: open(time_path(dir, base))?,
            buf: Vec::with_capacity(WRITE_CHUNK_BYTES),
            written: 0,
            idx: ActiveIndex {
                interval_bytes: interval,
                ..ActiveIndex::default()
            },
            max_timestamp: NO_TIMESTAMP,
            last_rel: None,
        })
    }

    fn size(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    fn push(&mut self, bytes: &[u8], h: &BatchHeader) -> std::io::Result<()> {
        let pos = self.size();
        let rel = (h.base_offset as u64 - self.base) as u32;
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp_known());
        self.idx
            .on_batch(rel, pos as u32, bytes.len() as u64, self.max_timestamp);
        self.last_rel = Some((h.last_offset() as u64 - self.base) as u32);
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= WRITE_CHUNK_BYTES {
            self.log.write_all_at(&self.buf, self.written)?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes out what is buffered and the indexes (closed like a rolled segment's, ending
    /// with the largest timestamp), and fsyncs all three files.
    fn finish(mut self) -> std::io::Result<(u64, i64, u64, u64)> {
        if !self.buf.is_empty() {
            self.log.write_all_at(&self.buf, self.written)?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        if let Some(rel) = self.last_rel {
            self.idx.push_time(self.max_timestamp, rel);
        }
        self.idx
            .write_pending(self.index.as_ref(), self.time.as_ref())?;
        self.log.sync_data()?;
        self.index.sync_data()?;
        self.time.sync_data()?;
        Ok((
            self.written,
            self.max_timestamp,
            self.idx.offsets.len() as u64,
            self.idx.times.len() as u64,
        ))
    }
}

/// A cleaned segment ready to be swapped in.
struct Cleaned {
    group: Group,
    size: u64,
    max_timestamp: i64,
    touched_ms: i64,
    offset_entries: u64,
    time_entries: u64,
}

impl PartitionLog {
    /// How dirty the log is, for a scheduler; `None` unless the log compacts.
    pub fn cleanable(&self) -> Option<Cleanable> {
        self.cleanable_below(u64::MAX)
    }

    /// [`PartitionLog::cleanable`] counting only the segments a pass bounded by `below` (see
    /// [`CleanBounds::below`]) may clean. A log whose last pass was held back by an undecided
    /// transaction is not due until more segments become cleanable.
    pub fn cleanable_below(&self, below: u64) -> Option<Cleanable> {
        let st = self.state.read();
        if !st.config.cleanup_policy.compacts() {
            return None;
        }
        let now = self.env.clock.now_ms();
        let (infos, start) = cleanable_segments(&st, now, below);
        let mut out = Cleanable {
            cleaned_to: start,
            ..Cleanable::default()
        };
        let mut oldest_dirty = None;
        for seg in &infos {
            out.cleanable_bytes += seg.size;
            if seg.next_offset > start {
                out.dirty_bytes += seg.size;
                oldest_dirty.get_or_insert(seg.retention_ts);
            }
        }
        let ratio_due = out.dirty_bytes > 0
            && out.dirty_ratio_ppm() >= u64::from(st.config.min_cleanable_dirty_ratio_ppm);
        let lag_due =
            oldest_dirty.is_some_and(|ts| elapsed_ms(now, ts) >= st.config.max_compaction_lag_ms);
        let dirty_end = infos.last().map_or(start, |s| s.next_offset);
        let stalled = st.clean_held_at.is_some_and(|at| dirty_end <= at);
        out.due = (ratio_due || lag_due) && !stalled;
        Some(out)
    }

    /// One cleaner pass with no bound ([`CleanBounds::none`]).
    pub fn clean(
        &self,
        dedupe_buffer_bytes: u64,
        throttle: &Throttle,
    ) -> Result<CleanOutcome, CleanError> {
        self.clean_below(dedupe_buffer_bytes, throttle, &CleanBounds::none())
    }

    /// One cleaner pass (see the module docs of the cleaner) over the closed segments wholly
    /// below `bounds.below`, its reads and writes paced by `throttle`, its tables at most
    /// `dedupe_buffer_bytes`. Returns at once, doing nothing, if the log does not compact,
    /// has nothing dirty to clean, or a pass is already running. Reads and appends go on
    /// during the pass; readers holding old segment files keep them.
    pub fn clean_below(
        &self,
        dedupe_buffer_bytes: u64,
        throttle: &Throttle,
        bounds: &CleanBounds<'_>,
    ) -> Result<CleanOutcome, CleanError> {
        if self.is_poisoned() {
            return Err(CleanError::Poisoned);
        }
        if self.cleaning.swap(true, Ordering::SeqCst) {
            return Ok(CleanOutcome::default());
        }
        let _guard = CleaningGuard(&self.cleaning);
        let now = self.env.clock.now_ms();
        let (infos, dirty_start, cfg, last_batches) = {
            let st = self.state.read();
            if self.is_retired() || !st.config.cleanup_policy.compacts() {
                return Ok(CleanOutcome::default());
            }
            let (infos, start) = cleanable_segments(&st, now, bounds.below);
            let last_batches: HashMap<i64, u64> = st
                .producers
                .producers
                .iter()
                .filter_map(|(pid, e)| e.batches.back().map(|b| (*pid, b.last_offset)))
                .collect();
            (infos, start, st.config.clone(), last_batches)
        };
        let mut out = CleanOutcome {
            cleaned_to: dirty_start,
            ..CleanOutcome::default()
        };
        let dirty_end = infos.last().map_or(dirty_start, |s| s.next_offset);
        if dirty_end <= dirty_start {
            return Ok(out);
        }
        let entries_max = (dedupe_buffer_bytes / KEY_MAP_ENTRY_BYTES).max(1) as usize;
        let scan = self.scan_dirty(&infos, dirty_start, entries_max, throttle, &mut out)?;
        let map_end = scan.map_end;
        self.state.write().clean_held_at = scan.held_back.then_some(dirty_end);
        out.held_back = scan.held_back;
        // Past a transaction held back, the next pass would stop at it again.
        out.more = map_end < dirty_end && !scan.held_back;
        if map_end <= dirty_start {
            return Ok(out);
        }
        let groups = plan_groups(&infos, map_end, cfg.segment_bytes);
        if groups.is_empty() {
            self.state.write().cleaned_to = map_end;
            out.cleaned_to = map_end;
            write_cleaner_checkpoint(self.env.fs.as_ref(), &self.dir, map_end)?;
            return Ok(out);
        }
        let mut rewrite = Rewrite {
            map: &scan.map,
            map_end,
            dirty_start,
            now,
            delete_retention_ms: cfg.delete_retention_ms,
            aborted: scan.aborted,
            bounds,
            last_batches,
            in_txn: HashMap::new(),
            in_txn_max: entries_max,
            in_txn_overflowed: false,
            markers_removed: 0,
            abort_markers_without_data: Vec::new(),
        };
        let interval = u64::from(cfg.index_interval_bytes);
        let mut cleaned = Vec::with_capacity(groups.len());
        for group in &groups {
            match self.write_cleaned(group, &infos, &mut rewrite, interval, throttle, &mut out) {
                Ok(c) => cleaned.push(c),
                Err(e) => {
                    self.discard_cleaned(&groups);
                    return Err(e);
                }
            }
        }
        let markers_removed = rewrite.markers_removed;
        let abort_markers_without_data = std::mem::take(&mut rewrite.abort_markers_without_data);
        drop(rewrite);
        drop(scan.map);
        if let Err(e) = write_manifest(self.env.fs.as_ref(), &self.dir, &groups) {
            self.discard_cleaned(&groups);
            let _ = remove_if_present(self.env.fs.as_ref(), &self.dir.join(SWAP_TMP_FILE));
            return Err(CleanError::Io(e));
        }
        out.cleaned_to = map_end.max(dirty_start);
        self.swap_in(cleaned, out.cleaned_to)?;
        out.swapped = true;
        out.segments_cleaned = groups.iter().map(|g| g.bases.len()).sum();
        out.markers_removed = markers_removed;
        out.abort_markers_without_data = abort_markers_without_data;
        Ok(out)
    }

    /// Pass 1: the key map over the dirty records from `dirty_start`, as far as `entries_max`
    /// entries allow, and the outcome of every transaction with records below where it
    /// stops. Once the tables are full it reads on only for the markers of the transactions
    /// still open; it stops before the first record of one whose marker it does not find.
    fn scan_dirty(
        &self,
        infos: &[SegInfo],
        dirty_start: u64,
        entries_max: usize,
        throttle: &Throttle,
        out: &mut CleanOutcome,
    ) -> Result<Scan, CleanError> {
        let mut t = ScanTables::default();
        let mut map_end = dirty_start;
        // The tables are full: from here on only markers of open transactions are read.
        let mut full = false;
        'segments: for seg in infos.iter().filter(|s| s.next_offset > dirty_start) {
            let file = self.cleaner_file(seg.base)?;
            let mut reader = BatchReader::new(file.as_ref(), seg.base, seg.size);
            loop {
                let position = reader.pos;
                let Some((h, bytes)) = reader.next_batch()? else {
                    break;
                };
                out.bytes_read += bytes.len() as u64;
                throttle.consume(bytes.len() as u64);
                let last = h.last_offset() as u64;
                if last < dirty_start {
                    continue;
                }
                if h.attributes & CONTROL_BIT != 0 {
                    if let Some(marker) = batch::marker(bytes, &h) {
                        t.on_marker(h.producer_id, marker, h.base_offset as u64);
                    }
                    if full {
                        if t.open.is_empty() {
                            break 'segments;
                        }
                    } else {
                        map_end = map_end.max(last + 1);
                    }
                    continue;
                }
                if full {
                    continue;
                }
                // An emptied batch (a producer's last, kept for its sequence numbers) has no
                // records to map and no transaction to decide.
                let count = h.records_count.max(0) as usize;
                if count == 0 {
                    map_end = map_end.max(last + 1);
                    continue;
                }
                if t.entries() > 0 && t.entries() + count > entries_max {
                    full = true;
                    if t.open.is_empty() {
                        break 'segments;
                    }
                    continue;
                }
                let corrupt = |reason| CleanError::Corrupt {
                    segment_base: seg.base,
                    position,
                    reason,
                };
                let records = records::uncompressed_records(bytes, &h)
                    .map_err(|_| corrupt("records could not be decompressed"))?;
                let refs = records::parse_records(&records, h.records_count)
                    .map_err(|_| corrupt("records could not be decoded"))?;
                let base = h.base_offset as u64;
                let mut pending = Vec::new();
                for r in refs {
                    let Some((ks, ke)) = r.key else { continue };
                    let Some(offset) = base.checked_add_signed(r.offset_delta) else {
                        return Err(corrupt("record offset out of range"));
                    };
                    if offset < dirty_start {
                        continue;
                    }
                    let hash = key_hash(&records[ks..ke]);
                    if h.attributes & TRANSACTIONAL_BIT != 0 {
                        pending.push((hash, offset));
                    } else {
                        t.map.insert(hash, offset);
                    }
                }
                if h.attributes & TRANSACTIONAL_BIT != 0 {
                    t.pending += pending.len();
                    t.open
                        .entry(h.producer_id)
                        .or_insert_with(|| OpenTxn {
                            first: base.max(dirty_start),
                            pending: Vec::new(),
                        })
                        .pending
                        .extend(pending);
                }
                map_end = map_end.max(last + 1);
            }
            if !full {
                map_end = map_end.max(seg.next_offset);
            }
        }
        // A transaction still open here has its marker past the cleanable segments (or has
        // none yet): nothing from its first record on is cleaned in this pass.
        let held_back = !t.open.is_empty();
        if let Some(first) = t.open.values().map(|txn| txn.first).min() {
            map_end = map_end.min(first);
        }
        Ok(Scan {
            map: t.map,
            map_end,
            aborted: t.aborted,
            held_back,
        })
    }

    /// Pass 2 for one group: its segments' kept batches into one cleaned segment, fsynced.
    fn write_cleaned(
        &self,
        group: &Group,
        infos: &[SegInfo],
        rewrite: &mut Rewrite<'_>,
        interval: u64,
        throttle: &Throttle,
        out: &mut CleanOutcome,
    ) -> Result<Cleaned, CleanError> {
        let fs = self.env.fs.as_ref();
        let base = group.bases[0];
        let mut writer = CleanedWriter::create(fs, &self.dir, base, interval)?;
        let mut touched_ms = i64::MIN;
        for seg in infos.iter().filter(|s| group.bases.contains(&s.base)) {
            touched_ms = touched_ms.max(seg.touched_ms);
            out.bytes_before += seg.size;
            let file = self.cleaner_file(seg.base)?;
            let mut reader = BatchReader::new(file.as_ref(), seg.base, seg.size);
            loop {
                let position = reader.pos;
                let Some((h, bytes)) = reader.next_batch()? else {
                    break;
                };
                out.bytes_read += bytes.len() as u64;
                throttle.consume(bytes.len() as u64);
                let kept = rewrite
                    .batch(bytes, &h, seg)
                    .map_err(|_| CleanError::Corrupt {
                        segment_base: seg.base,
                        position,
                        reason: "records could not be decoded",
                    })?;
                match kept {
                    Kept::All => writer.push(bytes, &h)?,
                    Kept::Nothing { removed } => out.records_removed += removed,
                    Kept::Some { batch, removed } => {
                        out.records_removed += removed;
                        let nh = batch::parse_header(&batch).ok_or(CleanError::Corrupt {
                            segment_base: seg.base,
                            position,
                            reason: "rewritten batch has no header",
                        })?;
                        writer.push(&batch, &nh)?;
                    }
                }
            }
            // The last segment's `max_timestamp` may be newer than any batch kept; keeping it
            // ages the merged segment for retention no earlier than its parts.
            writer.max_timestamp = writer.max_timestamp.max(seg.max_timestamp);
        }
        let (size, max_timestamp, offset_entries, time_entries) = writer.finish()?;
        out.bytes_after += size;
        throttle.consume(size);
        Ok(Cleaned {
            group: group.clone(),
            size,
            max_timestamp,
            touched_ms,
            offset_entries,
            time_entries,
        })
    }

    /// A closed segment's log file for the cleaner, through the shared cache.
    fn cleaner_file(&self, base: u64) -> Result<Arc<dyn StorageFile>, CleanError> {
        Ok(self.file(base, FileKind::Log)?)
    }

    /// Removes the files a failed pass wrote aside (best effort: the next open removes any left).
    fn discard_cleaned(&self, groups: &[Group]) {
        for g in groups {
            let base = g.bases[0];
            for p in [
                log_path(&self.dir, base),
                index_path(&self.dir, base),
                time_path(&self.dir, base),
            ] {
                let _ = remove_if_present(self.env.fs.as_ref(), &cleaned_path(&p));
            }
        }
    }

    /// Swaps the cleaned segments in (the manifest is durable, so a crash from here on
    /// completes the swap on reopen), then removes the manifest.
    fn swap_in(&self, cleaned: Vec<Cleaned>, map_end: u64) -> Result<(), CleanError> {
        let fs = self.env.fs.as_ref();
        {
            let mut st = self.state.write();
            if self.is_retired() {
                return Ok(());
            }
            for c in &cleaned {
                let present = c.group.bases.iter().all(|b| {
                    st.segments[..st.segments.len() - 1]
                        .iter()
                        .any(|s| s.base == *b)
                });
                if !present {
                    // Nothing deletes segments during a pass; if something did, completing
                    // this swap on a reopen would bring them back.
                    self.poison(
                        "cleaner swap",
                        std::io::Error::other("segments changed during a cleaner pass"),
                    );
                    return Err(CleanError::Poisoned);
                }
            }
            for c in &cleaned {
                if let Err(e) = self.swap_group(&c.group) {
                    self.poison("cleaner swap", &e);
                    return Err(CleanError::Io(e));
                }
                let base = c.group.bases[0];
                let first = st.segments.iter().position(|s| s.base == base);
                let Some(first) = first else { continue };
                let n = c.group.bases.len();
                st.segments.splice(
                    first..first + n,
                    [Segment {
                        base,
                        size: c.size,
                        next_offset: c.group.end,
                        max_timestamp: c.max_timestamp,
                        roll_base_ms: None,
                        touched_ms: c.touched_ms,
                        active: None,
                        offset_entries: c.offset_entries,
                        time_entries: c.time_entries,
                        allocated: c.size,
                    }],
                );
            }
            st.cleaned_to = st.cleaned_to.max(map_end);
            self.swaps.fetch_add(1, Ordering::SeqCst);
        }
        // The cleaner checkpoint goes before the manifest: recovery accepts offset gaps below
        // it, or below the ends of the groups a manifest names, and nowhere else.
        let done = fs
            .sync_dir(&self.dir)
            .and_then(|()| write_cleaner_checkpoint(fs, &self.dir, map_end))
            .and_then(|()| fs.remove_file(&self.dir.join(SWAP_FILE)))
            .and_then(|()| fs.sync_dir(&self.dir));
        if let Err(e) = done {
            self.poison("cleaner swap", &e);
            return Err(CleanError::Io(e));
        }
        Ok(())
    }

    /// Replaces one group's segments by its cleaned files: the merged-away segments are
    /// removed, then the cleaned files renamed over the first segment's names.
    fn swap_group(&self, group: &Group) -> std::io::Result<()> {
        for &base in &group.bases {
            self.forget_segment(base);
        }
        swap_group_files(self.env.fs.as_ref(), &self.dir, group)
    }
}

/// The closed segments a pass may touch (above the log start, up to the first one younger than
/// `min_compaction_lag_ms` or reaching `below`), and where the dirty part begins.
fn cleanable_segments(st: &super::State, now: i64, below: u64) -> (Vec<SegInfo>, u64) {
    let start = st.cleaned_to.max(st.log_start);
    let mut infos = Vec::new();
    let closed = &st.segments[..st.segments.len().saturating_sub(1)];
    for seg in closed.iter().filter(|s| s.next_offset > st.log_start) {
        let retention_ts = seg.retention_ts();
        if elapsed_ms(now, retention_ts) < st.config.min_compaction_lag_ms
            || seg.next_offset > below
        {
            break;
        }
        infos.push(SegInfo {
            base: seg.base,
            size: seg.size,
            next_offset: seg.next_offset,
            max_timestamp: seg.max_timestamp,
            touched_ms: seg.touched_ms,
            retention_ts,
        });
    }
    (infos, start)
}

/// Groups the segments below `map_end` into runs merged into one cleaned segment each: as
/// many adjacent segments as fit in `segment_bytes` and in a segment's u32 offset range.
fn plan_groups(infos: &[SegInfo], map_end: u64, segment_bytes: u64) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut bytes = 0u64;
    for seg in infos.iter().filter(|s| s.base < map_end) {
        let fits = groups.last().is_some_and(|g| {
            bytes + seg.size <= segment_bytes && seg.next_offset - g.bases[0] <= u64::from(u32::MAX)
        });
        if fits {
            if let Some(g) = groups.last_mut() {
                g.bases.push(seg.base);
                g.end = seg.next_offset;
            }
            bytes += seg.size;
        } else {
            groups.push(Group {
                bases: vec![seg.base],
                end: seg.next_offset,
            });
            bytes = seg.size;
        }
    }
    groups
}

/// The file moves of one group's swap, shared by a pass and by recovery completing it:
/// idempotent, so a crash anywhere in it can run it again.
fn swap_group_files(fs: &dyn FileSystem, dir: &Path, group: &Group) -> std::io::Result<()> {
    let base = group.bases[0];
    let cleaned_log = cleaned_path(&log_path(dir, base));
    let names = fs.list_dir(dir)?;
    let has = |p: &Path| {
        p.file_name()
            .is_some_and(|n| names.iter().any(|m| std::ffi::OsStr::new(m) == n))
    };
    for &merged in &group.bases[1..] {
        for p in [
            log_path(dir, merged),
            index_path(dir, merged),
            time_path(dir, merged),
        ] {
            remove_if_present(fs, &p)?;
        }
    }
    // The log file goes last: once it is in place, only index renames can be left to do.
    for p in [index_path(dir, base), time_path(dir, base)] {
        let c = cleaned_path(&p);
        if has(&c) {
            fs.rename(&c, &p)?;
        }
    }
    if has(&cleaned_log) {
        fs.rename(&cleaned_log, &log_path(dir, base))?;
    }
    Ok(())
}

fn encode_manifest(groups: &[Group]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(SWAP_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(groups.len() as u32).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.end.to_be_bytes());
        out.extend_from_slice(&(g.bases.len() as u32).to_be_bytes());
        for b in &g.bases {
            out.extend_from_slice(&b.to_be_bytes());
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn decode_manifest(buf: &[u8]) -> Option<Vec<Group>> {
    let body_len = buf.len().checked_sub(4)?;
    let (body, crc) = buf.split_at(body_len);
    if crc32c::crc32c(body).to_be_bytes() != crc || body.get(..4)? != SWAP_MAGIC {
        return None;
    }
    let u16_at = |at: usize| {
        body.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        body.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    let u64_at = |at: usize| {
        body.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    if u16_at(4)? != FORMAT_VERSION {
        return None;
    }
    let n = u32_at(8)? as usize;
    let mut at = 12;
    let mut groups = Vec::new();
    for _ in 0..n {
        let end = u64_at(at)?;
        let count = u32_at(at + 8)? as usize;
        at += 12;
        if count == 0 || count > body.len() {
            return None;
        }
        let mut bases = Vec::with_capacity(count);
        for _ in 0..count {
            bases.push(u64_at(at)?);
            at += 8;
        }
        groups.push(Group { bases, end });
    }
    (at == body.len()).then_some(groups)
}

/// Writes `bytes` to `tmp`, fsyncs it, renames it to `name` and fsyncs the directory.
fn write_durably(
    fs: &dyn FileSystem,
    dir: &Path,
    tmp: &str,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    let tmp = dir.join(tmp);
    let file = fs.open(&tmp, true)?;
    file.set_len(0)?;
    file.write_all_at(bytes, 0)?;
    file.sync_data()?;
    drop(file);
    fs.rename(&tmp, &dir.join(name))?;
    fs.sync_dir(dir)
}

/// The commit point of a pass: the manifest naming each group's segments.
fn write_manifest(fs: &dyn FileSystem, dir: &Path, groups: &[Group]) -> std::io::Result<()> {
    write_durably(fs, dir, SWAP_TMP_FILE, SWAP_FILE, &encode_manifest(groups))
}

fn write_cleaner_checkpoint(
    fs: &dyn FileSystem,
    dir: &Path,
    cleaned_to: u64,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(CLEANER_CHECKPOINT_BYTES);
    out.extend_from_slice(CLEANER_CHECKPOINT_MAGIC);
    out.extend_from_slice(&CLEANER_CHECKPOINT_VERSION.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&cleaned_to.to_be_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    debug_assert_eq!(out.len(), CLEANER_CHECKPOINT_BYTES);
    write_durably(
        fs,
        dir,
        CLEANER_CHECKPOINT_TMP_FILE,
        CLEANER_CHECKPOINT_FILE,
        &out,
    )
}

/// The cleaner checkpoint as a log starts from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct CleanerCheckpoint {
    /// Offset gaps below this offset are what cleaning left.
    pub gaps_below: u64,
    /// Every record below this offset went through a pass that resolved transactions: the
    /// dirty part starts here. 0 for a checkpoint of a cleaner that kept transactions as
    /// they were (its log is cleaned again from the start).
    pub cleaned_to: u64,
}

/// The cleaner checkpoint, zero when there is none or it is damaged (everything is then dirty
/// again, which costs a pass and loses nothing).
pub(super) fn read_cleaner_checkpoint(fs: &dyn FileSystem, dir: &Path) -> CleanerCheckpoint {
    let path = dir.join(CLEANER_CHECKPOINT_FILE);
    let Ok(file) = fs.open(&path, false) else {
        return CleanerCheckpoint::default();
    };
    let mut buf = [0u8; CLEANER_CHECKPOINT_BYTES];
    if crate::env::read_exact_at(file.as_ref(), &mut buf, 0).is_err() {
        return CleanerCheckpoint::default();
    }
    let (body, crc) = buf.split_at(CLEANER_CHECKPOINT_BYTES - 4);
    let version = u16::from_be_bytes([body[4], body[5]]);
    let known = version == CLEANER_CHECKPOINT_VERSION
        || version == CLEANER_CHECKPOINT_VERSION_KEPT_TRANSACTIONS;
    if crc32c::crc32c(body).to_be_bytes() != crc || &body[..4] != CLEANER_CHECKPOINT_MAGIC || !known
    {
        return CleanerCheckpoint::default();
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&body[8..16]);
    let offset = u64::from_be_bytes(offset);
    CleanerCheckpoint {
        gaps_below: offset,
        cleaned_to: if version == CLEANER_CHECKPOINT_VERSION {
            offset
        } else {
            0
        },
    }
}

/// What [`recover_swap`] did.
pub(super) struct SwapRecovery {
    /// Files were changed.
    pub changed: bool,
    /// Offset gaps are what cleaning left below this offset (the cleaner checkpoint, or the
    /// end of a swap just completed); above it a gap is damage.
    pub gaps_below: u64,
}

/// Recovery's first step: completes a cleaner swap whose manifest is durable, or rolls back a
/// pass that did not reach it (its `.cleaned` files removed).
pub(super) fn recover_swap(
    fs: &dyn FileSystem,
    dir: &Path,
    names: &[String],
) -> std::io::Result<SwapRecovery> {
    let mut changed = false;
    let mut gaps_below = read_cleaner_checkpoint(fs, dir).gaps_below;
    if names.iter().any(|n| n == SWAP_FILE) {
        let path = dir.join(SWAP_FILE);
        let file = fs.open(&path, false)?;
        let len = file.len()?;
        let groups = if len <= SWAP_BYTES_MAX {
            let mut buf = vec![0u8; len as usize];
            crate::env::read_exact_at(file.as_ref(), &mut buf, 0)?;
            decode_manifest(&buf)
        } else {
            None
        };
        drop(file);
        match groups {
            Some(groups) => {
                tracing::info!(dir = %dir.display(), groups = groups.len(), "completing an interrupted cleaner swap");
                for g in &groups {
                    swap_group_files(fs, dir, g)?;
                    gaps_below = gaps_below.max(g.end);
                }
            }
            // The manifest is renamed into place only once fsynced whole; a damaged one is a
            // disk fault, and the segments it would name are left as they are.
            None => {
                tracing::warn!(dir = %dir.display(), "damaged cleaner swap manifest; leaving the segments as they are")
            }
        }
        fs.sync_dir(dir)?;
        fs.remove_file(&path)?;
        changed = true;
    }
    for name in fs.list_dir(dir)? {
        if name.ends_with(CLEANED_SUFFIX)
            || name == SWAP_TMP_FILE
            || name == CLEANER_CHECKPOINT_TMP_FILE
        {
            fs.remove_file(&dir.join(&name))?;
            changed = true;
        }
    }
    if changed {
        fs.sync_dir(dir)?;
    }
    Ok(SwapRecovery {
        changed,
        gaps_below,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_rejects_damage() {
        let groups = vec![
            Group {
                bases: vec![0, 10, 20],
                end: 30,
            },
            Group {
                bases: vec![30],
                end: 45,
            },
        ];
        let bytes = encode_manifest(&groups);
        assert_eq!(decode_manifest(&bytes), Some(groups));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert_eq!(decode_manifest(&b), None, "byte {i}");
        }
        assert_eq!(decode_manifest(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn groups_merge_while_they_fit() {
        let seg = |base, size, next_offset| SegInfo {
            base,
            size,
            next_offset,
            max_timestamp: 0,
            touched_ms: 0,
            retention_ts: 0,
        };
        let infos = [
            seg(0, 400, 10),
            seg(10, 400, 20),
            seg(20, 400, 30),
            seg(30, 10, 40),
        ];
        let groups = plan_groups(&infos, 30, 1000);
        assert_eq!(
            groups,
            vec![
                Group {
                    bases: vec![0, 10],
                    end: 20
                },
                Group {
                    bases: vec![20],
                    end: 30
                }
            ]
        );
    }
}
