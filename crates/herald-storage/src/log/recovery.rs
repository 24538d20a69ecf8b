//! Recovery when a log is opened: which segments to trust, which to scan, where a torn or corrupt
//! tail ends the log, and which segment becomes the active one (`docs/storage-format.md`,
//! "Recovery").
//!
//! The steps, in order: [`read_checkpoint`] (the recovery point, if usable), [`scan_segments`]
//! (trust the closed segments below the recovery point, [`recover_tail`] of the rest, delete
//! everything after a damaged point), [`reactivate_last`] (a closed segment left last becomes
//! active again). Both places that rebuild a segment's in-memory index from its files go through
//! [`reload_index`].

use std::path::Path;

use super::{SegFiles, Segment, index_path, io_err, log_path, segment_bases, time_path};
use crate::batch::{
    self, BATCH_HEADER_BYTES, BatchHeader, LOG_OVERHEAD_BYTES, NO_TIMESTAMP, known_timestamp,
};
use crate::checkpoint::{self, CHECKPOINT_TMP_FILE, Checkpoint};
use crate::config::{BATCH_BYTES_MAX, LogConfig};
use crate::env::{Env, FileSystem, StorageFile, read_exact_at};
use crate::error::OpenError;
use crate::index::{self, ActiveIndex, OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES};
use crate::producer::ProducerState;

/// What recovery found: the state a log starts from.
pub(super) struct Recovered {
    /// Sorted by base offset, never empty; the last one is active.
    pub(super) segments: Vec<Segment>,
    pub(super) log_start: u64,
    pub(super) next_offset: u64,
    pub(super) producers: ProducerState,
    /// The checkpoint read at the start, if it was usable.
    pub(super) checkpoint: Option<Checkpoint>,
    /// The active segment's base and the handles recovery used on it (which may hold unsynced
    /// truncations), if it opened them.
    pub(super) active_files: Option<(u64, SegFiles)>,
    /// Recovery changed a file, or the checkpoint does not describe the log's end: a new
    /// checkpoint must make the state durable. `false` after a clean close.
    pub(super) changed: bool,
}

/// Recovers the log in `dir` (which the caller has created and locked).
pub(super) fn recover(
    dir: &Path,
    config: &LogConfig,
    env: &Env,
    now: i64,
) -> Result<Recovered, OpenError> {
    let fs = env.fs.as_ref();
    let names = fs.list_dir(dir).map_err(io_err(dir))?;
    let swap = super::clean::recover_swap(fs, dir, &names).map_err(io_err(dir))?;
    let swapped = swap.changed;
    let names = if swapped {
        fs.list_dir(dir).map_err(io_err(dir))?
    } else {
        names
    };
    let bases = segment_bases(&names);
    let left_tmp = names.iter().any(|n| n == CHECKPOINT_TMP_FILE);
    let cp = read_checkpoint(fs, dir, &names, &bases)?;
    let mut scan = SegmentScan {
        dir,
        env,
        now,
        interval: u64::from(config.index_interval_bytes),
        producers_max: config.producers_max as usize,
        cp: cp.as_ref(),
        producers: cp.as_ref().map(|c| c.producers.clone()).unwrap_or_default(),
        replay_from: cp.as_ref().map_or(0, |c| c.next_offset),
        segments: Vec::new(),
        active_files: None,
        changed: left_tmp || swapped,
        gaps_below: swap.gaps_below,
    };
    scan_segments(&mut scan, &bases)?;
    reactivate_last(&mut scan)?;
    let SegmentScan {
        mut segments,
        mut producers,
        mut active_files,
        mut changed,
        interval,
        ..
    } = scan;
    if segments.is_empty() {
        let base = cp.as_ref().map_or(0, |c| c.next_offset.max(c.log_start));
        // Its handles close at once: the new files are empty, and a checkpoint (if one is
        // needed) opens them through the cache.
        let seg =
            super::create_segment(env, dir, base, interval, |_, path| env.fs.open(path, true))
                .map_err(io_err(dir))?;
        active_files = None;
        segments.push(seg);
        // A brand-new log needs no checkpoint: without one it recovers to the same empty log
        // at offset 0 (creating its segment fsynced the directory). That keeps creating many
        // partitions at one directory fsync each.
        let fresh = bases.is_empty() && cp.is_none() && !left_tmp;
        changed = !fresh;
        if fresh {
            return Ok(Recovered {
                segments,
                log_start: 0,
                next_offset: 0,
                producers,
                checkpoint: None,
                active_files,
                changed: false,
            });
        }
    }
    let next_offset = segments.last().map_or(0, |s| s.next_offset);
    producers.truncate_tail(next_offset);
    let first_base = segments.first().map_or(0, |s| s.base);
    let log_start = cp
        .as_ref()
        .map_or(first_base, |c| c.log_start.max(first_base))
        .min(next_offset);
    producers.truncate_head(log_start);
    let at_end = match (&cp, segments.last()) {
        (Some(c), Some(last)) => {
            c.segment_base == last.base
                && c.position == last.size
                && c.next_offset == next_offset
                && c.log_start == log_start
        }
        // Never written and never checkpointed (a fresh log reopened): nothing to record.
        (None, Some(last)) => segments.len() == 1 && last.base == 0 && last.size == 0,
        _ => false,
    };
    Ok(Recovered {
        segments,
        log_start,
        next_offset,
        producers,
        checkpoint: cp,
        active_files,
        changed: changed || !at_end,
    })
}

/// Step 1: removes a leftover `checkpoint.tmp` and reads `checkpoint`, usable only if the
/// segment it names is still there.
fn read_checkpoint(
    fs: &dyn FileSystem,
    dir: &Path,
    names: &[String],
    bases: &[u64],
) -> Result<Option<Checkpoint>, OpenError> {
    if names.iter().any(|n| n == CHECKPOINT_TMP_FILE) {
        // A checkpoint write that did not reach its rename; the previous one stands.
        let tmp = dir.join(CHECKPOINT_TMP_FILE);
        fs.remove_file(&tmp).map_err(io_err(&tmp))?;
    }
    let mut cp = checkpoint::read(fs, dir).map_err(io_err(dir))?;
    if let Some(c) = &cp {
        if !bases.contains(&c.segment_base) {
            tracing::warn!(dir = %dir.display(), "checkpoint names a missing segment; scanning every segment");
            cp = None;
        }
    }
    Ok(cp)
}

/// What [`scan_segments`] carries from one segment to the next.
struct SegmentScan<'a> {
    dir: &'a Path,
    env: &'a Env,
    now: i64,
    interval: u64,
    producers_max: usize,
    cp: Option<&'a Checkpoint>,
    /// Idempotent-producer state: the checkpoint's, plus batches replayed from `replay_from`.
    producers: ProducerState,
    replay_from: u64,
    segments: Vec<Segment>,
    /// Handles of the segment left active, see [`Recovered::active_files`].
    active_files: Option<(u64, SegFiles)>,
    /// See [`Recovered::changed`].
    changed: bool,
    /// Offset gaps below this offset are what compaction left; above it they are damage.
    gaps_below: u64,
}

/// Step 2: every segment in order. Closed segments below the recovery point are trusted; the
/// rest are scanned ([`recover_tail`]); after a torn or corrupt point, or a segment that does not
/// continue its predecessor, every later segment is deleted: the log never has a gap, except
/// the gaps compaction leaves below the cleaner checkpoint.
fn scan_segments(scan: &mut SegmentScan<'_>, bases: &[u64]) -> Result<(), OpenError> {
    let fs = scan.env.fs.as_ref();
    let dir = scan.dir;
    let mut damaged = false;
    for (i, &base) in bases.iter().enumerate() {
        let lp = log_path(dir, base);
        let ip = index_path(dir, base);
        let tp = time_path(dir, base);
        if damaged {
            scan.changed = true;
            for p in [&lp, &ip, &tp] {
                match fs.remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(p)(e)),
                }
            }
            continue;
        }
        // A compacted segment may end before the next one begins (its last records were
        // cleaned away): the gap is part of its offset range. Overlap is damage.
        let gaps_below = scan.gaps_below;
        if let Some(prev) = scan.segments.last_mut() {
            if prev.next_offset < base && base <= gaps_below {
                prev.next_offset = base;
            }
        }
        if let Some(prev) = scan.segments.last() {
            if prev.next_offset != base {
                tracing::warn!(dir = %dir.display(), base, expected = prev.next_offset, "segment does not continue its predecessor; dropping it and everything after");
                damaged = true;
                scan.changed = true;
                for p in [&lp, &ip, &tp] {
                    let _ = fs.remove_file(p);
                }
                continue;
            }
        }
        let files = SegFiles {
            log: fs.open(&lp, false).map_err(io_err(&lp))?,
            index: fs.open(&ip, true).map_err(io_err(&ip))?,
            time: fs.open(&tp, true).map_err(io_err(&tp))?,
        };
        let file_len = files.log.len().map_err(io_err(&lp))?;
        let is_last = i + 1 == bases.len();
        let trusted_closed = scan.cp.is_some_and(|c| base < c.segment_base && !is_last);
        if trusted_closed {
            if let Some(seg) = trust_closed(dir, base, bases[i + 1], &files, file_len, scan.now)? {
                scan.segments.push(seg);
                continue;
            }
        }
        let mut seg = recover_tail(scan, base, &files, file_len)?;
        if seg.size < file_len {
            damaged = true;
        }
        if is_last || damaged {
            scan.active_files = Some((base, files));
        } else {
            super::close_segment(&mut seg, &files).map_err(io_err(&ip))?;
            scan.changed = true;
        }
        scan.segments.push(seg);
    }
    Ok(())
}

/// A closed segment fsynced before the checkpoint was written, taken without reading its data;
/// `None` if its index files are not whole (then it is scanned and re-indexed).
fn trust_closed(
    dir: &Path,
    base: u64,
    next_base: u64,
    files: &SegFiles,
    file_len: u64,
    now: i64,
) -> Result<Option<Segment>, OpenError> {
    let ip = index_path(dir, base);
    let tp = time_path(dir, base);
    let idx_len = files.index.len().map_err(io_err(&ip))?;
    let time_len = files.time.len().map_err(io_err(&tp))?;
    // Every closed non-empty segment ends its time index with its largest timestamp; without
    // it (or with torn entries) the segment is scanned and re-indexed.
    let time_ok = time_len % TIME_ENTRY_BYTES == 0 && (time_len > 0 || file_len == 0);
    if idx_len % OFFSET_ENTRY_BYTES != 0 || !time_ok {
        return Ok(None);
    }
    let max_timestamp = index::last_time(files.time.as_ref())
        .map_err(io_err(&tp))?
        .map_or(NO_TIMESTAMP, |e| known_timestamp(e.ts));
    Ok(Some(Segment {
        base,
        size: file_len,
        next_offset: next_base,
        max_timestamp,
        roll_base_ms: None,
        touched_ms: modified_or(files.log.as_ref(), now),
        active: None,
        offset_entries: idx_len / OFFSET_ENTRY_BYTES,
        time_entries: time_len / TIME_ENTRY_BYTES,
        allocated: file_len,
    }))
}

/// Scans a segment from the recovery point (or its start), validating every batch, rebuilding
/// the index behind it and replaying idempotent-producer state; truncates a torn or corrupt
/// tail. The segment comes back active (open files, in-memory index); a size below `file_len`
/// means its tail was cut.
fn recover_tail(
    scan: &mut SegmentScan<'_>,
    base: u64,
    files: &SegFiles,
    file_len: u64,
) -> Result<Segment, OpenError> {
    let dir = scan.dir;
    let lp = log_path(dir, base);
    let (start_pos, start_offset) = match scan.cp {
        Some(c) if c.segment_base == base && c.position <= file_len => (c.position, c.next_offset),
        _ => (0, base),
    };
    // Index entries at or past the recovery point may describe batches that are gone.
    let (offset_entries_max, time_entries_max) = if start_pos > 0 {
        (
            start_pos / OFFSET_ENTRY_BYTES + 1,
            start_pos / TIME_ENTRY_BYTES + 1,
        )
    } else {
        (0, 0)
    };
    let mut idx = reload_index(
        scan,
        base,
        files,
        start_offset - base,
        start_pos,
        offset_entries_max,
        time_entries_max,
    )?;
    let mut max_ts = idx
        .times
        .last()
        .map_or(NO_TIMESTAMP, |t| known_timestamp(t.ts));
    if start_pos > 0 {
        // The sparse time index may miss the newest batches before the recovery point.
        max_ts = max_ts.max(
            scan.cp
                .map_or(NO_TIMESTAMP, |c| known_timestamp(c.max_timestamp)),
        );
    }
    let mut scanner = Scanner::new(files.log.as_ref(), file_len);
    let mut pos = start_pos;
    let mut offset = start_offset;
    let mut first_max_timestamp = None;
    while pos < file_len {
        let rel = offset - base;
        let Some((h, _)) = scanner
            .batch(pos, offset, scan.gaps_below)
            .map_err(io_err(&lp))?
        else {
            break;
        };
        let next = h.last_offset() as u64 + 1;
        if next - base > u64::from(u32::MAX) || pos > u64::from(u32::MAX) {
            break;
        }
        if pos == 0 {
            first_max_timestamp = Some(h.max_timestamp_known());
        }
        max_ts = max_ts.max(h.max_timestamp_known());
        idx.on_batch(rel as u32, pos as u32, h.total_bytes as u64, max_ts);
        if offset >= scan.replay_from {
            scan.producers.replay(&h, scan.producers_max);
        }
        pos += h.total_bytes as u64;
        offset = next;
    }
    // The age of the data, taken before a cut below changes the file.
    let touched_ms = modified_or(files.log.as_ref(), scan.now);
    if pos < file_len {
        // Zeros where the next batch header would start are the space reserved ahead of the
        // writes (`LogConfig::preallocate_bytes`), left by every stop: expected, not damage.
        let mut head = [0u8; 12];
        let zeros = read_exact_at(files.log.as_ref(), &mut head, pos).is_ok() && head == [0u8; 12];
        if zeros {
            tracing::debug!(dir = %dir.display(), base, valid_bytes = pos, file_bytes = file_len, "cutting preallocated segment space");
        } else {
            tracing::warn!(dir = %dir.display(), base, valid_bytes = pos, file_bytes = file_len, "truncating torn or corrupt segment tail");
        }
        files.log.set_len(pos).map_err(io_err(&lp))?;
        scan.changed = true;
    } else if pos > start_pos {
        // Batches past the checkpoint: the checkpoint must move over them.
        scan.changed = true;
    }
    let first_ts = if start_pos == 0 {
        first_max_timestamp
    } else {
        let mut head = [0u8; BATCH_HEADER_BYTES];
        read_exact_at(files.log.as_ref(), &mut head, 0)
            .ok()
            .and_then(|()| batch::parse_header(&head))
            .map(|h| h.max_timestamp_known())
    };
    let roll_base_ms = (pos > 0).then(|| first_ts.filter(|t| *t >= 0).unwrap_or(scan.now));
    Ok(Segment {
        base,
        size: pos,
        next_offset: offset,
        max_timestamp: max_ts,
        roll_base_ms,
        touched_ms,
        active: Some(idx),
        offset_entries: 0,
        time_entries: 0,
        allocated: pos,
    })
}

/// Step 3: a closed segment left last (its successors were dropped) becomes active again, its
/// index reloaded from its files.
fn reactivate_last(scan: &mut SegmentScan<'_>) -> Result<(), OpenError> {
    let (dir, env, now) = (scan.dir, scan.env, scan.now);
    let Some(seg) = scan.segments.last() else {
        return Ok(());
    };
    if seg.active.is_some() {
        return Ok(());
    }
    let (base, next_offset, size) = (seg.base, seg.next_offset, seg.size);
    let (offset_entries, time_entries) = (seg.offset_entries, seg.time_entries);
    let ip = index_path(dir, base);
    let files = SegFiles::open(env, dir, base, false).map_err(io_err(&ip))?;
    let idx = reload_index(
        scan,
        base,
        &files,
        next_offset - base,
        size,
        offset_entries,
        time_entries,
    )?;
    scan.changed = true;
    scan.active_files = Some((base, files));
    if let Some(seg) = scan.segments.last_mut() {
        seg.roll_base_ms = (size > 0).then_some(now);
        seg.active = Some(idx);
    }
    Ok(())
}

/// Loads the valid prefix of a segment's index files (entries below `rel_end` and `pos_end`,
/// at most the given counts) as an active in-memory index, and cuts the files to what was kept,
/// since entries past it may describe batches that are gone.
fn reload_index(
    scan: &mut SegmentScan<'_>,
    base: u64,
    files: &SegFiles,
    rel_end: u64,
    pos_end: u64,
    offset_entries_max: u64,
    time_entries_max: u64,
) -> Result<ActiveIndex, OpenError> {
    let ip = index_path(scan.dir, base);
    let tp = time_path(scan.dir, base);
    let mut idx = ActiveIndex {
        interval_bytes: scan.interval,
        ..ActiveIndex::default()
    };
    if offset_entries_max > 0 {
        idx.offsets =
            index::load_offsets(files.index.as_ref(), rel_end, pos_end, offset_entries_max)
                .map_err(io_err(&ip))?;
    }
    if time_entries_max > 0 {
        idx.times = index::load_times(files.time.as_ref(), rel_end, time_entries_max)
            .map_err(io_err(&tp))?;
    }
    // Cut only what differs: an unchanged file is not written (and a clean open writes nothing).
    for (file, len, path) in [
        (
            &files.index,
            idx.offsets.len() as u64 * OFFSET_ENTRY_BYTES,
            &ip,
        ),
        (&files.time, idx.times.len() as u64 * TIME_ENTRY_BYTES, &tp),
    ] {
        if file.len().map_err(io_err(path))? != len {
            file.set_len(len).map_err(io_err(path))?;
            scan.changed = true;
        }
    }
    idx.offsets_written = idx.offsets.len();
    idx.times_written = idx.times.len();
    Ok(idx)
}

/// When `file` last changed, for the retention of batches without timestamps across a
/// reopen (as Kafka ages such a segment by its file's time); `now` if the file cannot say.
fn modified_or(file: &dyn StorageFile, now: i64) -> i64 {
    file.modified_ms()
        .ok()
        .flatten()
        .map_or(now, |t| t.min(now))
}

/// Reads a segment sequentially in large chunks, validating every batch.
struct Scanner<'a> {
    file: &'a dyn StorageFile,
    file_len: u64,
    buf: Vec<u8>,
    buf_pos: u64,
}

const SCAN_CHUNK_BYTES: usize = 1 << 20;

impl<'a> Scanner<'a> {
    fn new(file: &'a dyn StorageFile, file_len: u64) -> Self {
        Scanner {
            file,
            file_len,
            buf: Vec::new(),
            buf_pos: 0,
        }
    }

    /// The bytes `[pos, pos + len)` if the file holds them.
    fn bytes(&mut self, pos: u64, len: usize) -> std::io::Result<Option<&[u8]>> {
        if pos + len as u64 > self.file_len {
            return Ok(None);
        }
        let have = pos >= self.buf_pos && pos + len as u64 <= self.buf_pos + self.buf.len() as u64;
        if !have {
            let want = len
                .max(SCAN_CHUNK_BYTES)
                .min((self.file_len - pos) as usize);
            self.buf.resize(want, 0);
            let n = self.file.read_at(&mut self.buf, pos)?;
            self.buf.truncate(n);
            self.buf_pos = pos;
            if n < len {
                return Ok(None);
            }
        }
        let start = (pos - self.buf_pos) as usize;
        Ok(Some(&self.buf[start..start + len]))
    }

    /// The valid batch at `pos` expected to start at `offset` (or after it, below `gaps_below`), or `None` at a torn/corrupt point.
    fn batch(
        &mut self,
        pos: u64,
        offset: u64,
        gaps_below: u64,
    ) -> std::io::Result<Option<(BatchHeader, &[u8])>> {
        let len = match self.bytes(pos, LOG_OVERHEAD_BYTES)? {
            Some(head) => match batch::announced_len(head) {
                Some(len) if len <= BATCH_BYTES_MAX as usize => len,
                _ => return Ok(None),
            },
            None => return Ok(None),
        };
        let Some(bytes) = self.bytes(pos, len)? else {
            return Ok(None);
        };
        // Below the cleaner checkpoint a batch may have lost records to the cleaner (its
        // records count is then below its last offset delta + 1, down to 0).
        let checked = if offset < gaps_below {
            batch::check_cleaned_batch(bytes, BATCH_BYTES_MAX as usize)
        } else {
            batch::check_batch(bytes, BATCH_BYTES_MAX as usize)
        };
        match checked {
            // The log writes leader epoch 0; anything else there is damage the CRC cannot see.
            // Below the cleaner checkpoint a compacted segment has gaps between its batches.
            Ok(h)
                if h.base_offset >= 0
                    && (h.base_offset as u64 == offset
                        || (h.base_offset as u64 > offset
                            && (h.base_offset as u64) < gaps_below))
                    && bytes[12..16] == [0; 4] =>
            {
                Ok(Some((h, bytes)))
            }
            _ => Ok(None),
        }
    }
}
