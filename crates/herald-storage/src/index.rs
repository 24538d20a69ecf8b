//! Sparse per-segment indexes: offset -> file position (`.index`) and timestamp -> offset
//! (`.timeindex`). The active segment keeps its entries in memory and writes them out at each
//! checkpoint and roll; closed segments are searched in their files with positional reads.

use std::io;

use crate::env::{StorageFile, read_exact_at};

/// `.index` entry: relative offset u32, position u32 (big-endian).
pub(crate) const OFFSET_ENTRY_BYTES: u64 = 8;
/// `.timeindex` entry: max timestamp so far i64, relative offset u32 (big-endian).
pub(crate) const TIME_ENTRY_BYTES: u64 = 12;
const _: () = assert!(OFFSET_ENTRY_BYTES == 8 && TIME_ENTRY_BYTES == 12);

/// One offset index entry: the batch starting at relative offset `rel` begins at `pos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel: u32,
    pub pos: u32,
}

/// One time index entry: every record up to and including the batch at relative offset `rel`
/// has a timestamp <= `ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub ts: i64,
    pub rel: u32,
}

impl OffsetEntry {
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.rel.to_be_bytes());
        b[4..].copy_from_slice(&self.pos.to_be_bytes());
        b
    }
    pub fn decode(b: &[u8]) -> OffsetEntry {
        OffsetEntry {
            rel: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            pos: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

impl TimeEntry {
    pub fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&self.ts.to_be_bytes());
        b[8..].copy_from_slice(&self.rel.to_be_bytes());
        b
    }
    pub fn decode(b: &[u8]) -> TimeEntry {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        TimeEntry {
            ts: i64::from_be_bytes(ts),
            rel: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

/// The active segment's indexes, all in memory; `*_written` entries are already in the files.
#[derive(Debug, Default)]
pub(crate) struct ActiveIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    pub offsets_written: usize,
    pub times_written: usize,
    pub bytes_since_entry: u64,
    pub interval_bytes: u64,
}

impl ActiveIndex {
    /// Notes a batch of `len` bytes at `pos`, adding entries every `interval_bytes`.
    pub fn on_batch(&mut self, rel: u32, pos: u32, len: u64, max_ts_so_far: i64) {
        if self.bytes_since_entry >= self.interval_bytes {
            self.offsets.push(OffsetEntry { rel, pos });
            self.push_time(max_ts_so_far, rel);
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += len;
    }

    /// Adds a time entry if it raises the maximum (entries stay strictly increasing).
    pub fn push_time(&mut self, ts: i64, rel: u32) {
        if self.times.last().is_none_or(|t| ts > t.ts) {
            self.times.push(TimeEntry { ts, rel });
        }
    }

    /// Position of the last indexed batch starting at or before relative offset `rel`.
    pub fn lookup(&self, rel: u32) -> u32 {
        let i = self.offsets.partition_point(|e| e.rel <= rel);
        if i == 0 { 0 } else { self.offsets[i - 1].pos }
    }

    /// Relative offset of the last entry whose timestamp is below `ts` (0 if none).
    pub fn lookup_time(&self, ts: i64) -> u32 {
        let i = self.times.partition_point(|e| e.ts < ts);
        if i == 0 { 0 } else { self.times[i - 1].rel }
    }

    /// Appends the entries not yet in the files.
    pub fn write_pending(
        &mut self,
        index_file: &dyn StorageFile,
        time_file: &dyn StorageFile,
    ) -> io::Result<()> {
        if self.offsets_written < self.offsets.len() {
            let mut buf = Vec::new();
            for e in &self.offsets[self.offsets_written..] {
                buf.extend_from_slice(&e.encode());
            }
            index_file.write_all_at(&buf, self.offsets_written as u64 * OFFSET_ENTRY_BYTES)?;
            self.offsets_written = self.offsets.len();
        }
        if self.times_written < self.times.len() {
            let mut buf = Vec::new();
            for e in &self.times[self.times_written..] {
                buf.extend_from_slice(&e.encode());
            }
            time_file.write_all_at(&buf, self.times_written as u64 * TIME_ENTRY_BYTES)?;
            self.times_written = self.times.len();
        }
        Ok(())
    }
}

/// Loads the longest valid prefix of a `.index` file, keeping entries below `rel_end`/`pos_end`.
pub(crate) fn load_offsets(
    file: &dyn StorageFile,
    rel_end: u64,
    pos_end: u64,
    entries_max: u64,
) -> io::Result<Vec<OffsetEntry>> {
    let n = (file.len()? / OFFSET_ENTRY_BYTES).min(entries_max);
    let mut buf = vec![0u8; (n * OFFSET_ENTRY_BYTES) as usize];
    let got = file.read_at(&mut buf, 0)?;
    let mut out: Vec<OffsetEntry> = Vec::new();
    for chunk in buf[..got].chunks_exact(OFFSET_ENTRY_BYTES as usize) {
        let e = OffsetEntry::decode(chunk);
        let ordered = out.last().is_none_or(|l| e.rel > l.rel && e.pos > l.pos);
        if !ordered || u64::from(e.rel) >= rel_end || u64::from(e.pos) >= pos_end {
            break;
        }
        out.push(e);
    }
    Ok(out)
}

/// Loads the longest valid prefix of a `.timeindex` file, keeping entries below `rel_end`.
pub(crate) fn load_times(
    file: &dyn StorageFile,
    rel_end: u64,
    entries_max: u64,
) -> io::Result<Vec<TimeEntry>> {
    let n = (file.len()? / TIME_ENTRY_BYTES).min(entries_max);
    let mut buf = vec![0u8; (n * TIME_ENTRY_BYTES) as usize];
    let got = file.read_at(&mut buf, 0)?;
    let mut out: Vec<TimeEntry> = Vec::new();
    for chunk in buf[..got].chunks_exact(TIME_ENTRY_BYTES as usize) {
        let e = TimeEntry::decode(chunk);
        let ordered = out.last().is_none_or(|l| e.ts > l.ts && e.rel >= l.rel);
        if !ordered || u64::from(e.rel) >= rel_end {
            break;
        }
        out.push(e);
    }
    Ok(out)
}

/// Binary search of a closed segment's `.index` file: position of the last entry with relative
/// offset <= `rel`, or 0. Entries beyond `pos_max` are ignored as damaged.
pub(crate) fn file_lookup(
    file: &dyn StorageFile,
    entries: u64,
    rel: u32,
    pos_max: u64,
) -> io::Result<u32> {
    let (mut lo, mut hi) = (0u64, entries);
    let mut best = 0u32;
    let mut b = [0u8; OFFSET_ENTRY_BYTES as usize];
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        read_exact_at(file, &mut b, mid * OFFSET_ENTRY_BYTES)?;
        let e = OffsetEntry::decode(&b);
        if e.rel <= rel {
            if u64::from(e.pos) < pos_max {
                best = best.max(e.pos);
            }
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(best)
}

/// Binary search of a closed segment's `.timeindex`: relative offset of the last entry whose
/// timestamp is below `ts`, or 0.
pub(crate) fn file_lookup_time(file: &dyn StorageFile, entries: u64, ts: i64) -> io::Result<u32> {
    let (mut lo, mut hi) = (0u64, entries);
    let mut best = 0u32;
    let mut b = [0u8; TIME_ENTRY_BYTES as usize];
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        read_exact_at(file, &mut b, mid * TIME_ENTRY_BYTES)?;
        let e = TimeEntry::decode(&b);
        if e.ts < ts {
            best = e.rel;
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(best)
}

/// The last entry of a `.timeindex` file (a closed segment's largest timestamp), if any.
pub(crate) fn last_time(file: &dyn StorageFile) -> io::Result<Option<TimeEntry>> {
    let n = file.len()? / TIME_ENTRY_BYTES;
    if n == 0 {
        return Ok(None);
    }
    let mut b = [0u8; TIME_ENTRY_BYTES as usize];
    read_exact_at(file, &mut b, (n - 1) * TIME_ENTRY_BYTES)?;
    Ok(Some(TimeEntry::decode(&b)))
}
