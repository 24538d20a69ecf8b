//! Reads that leave the record batches in their segment file: a [`FileRange`], a handle that
//! keeps the file open plus a byte range, which a server sends to a socket with `sendfile(2)`
//! so the bytes never pass through the process. The batches are the ones the copying read
//! returns; only their headers are read, to find where the range ends.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use bytes::Bytes;

use super::{PartitionLog, ReadStart, Start};
use crate::batch::{self, BATCH_HEADER_BYTES};
use crate::env::{StorageFile, read_exact_at};
use crate::error::ReadError;

/// Bytes of the segment read at once while walking batch headers to the end of a range: one
/// read covers the headers of many small batches, and costs little beside a large one.
const HEADER_WINDOW_BYTES: usize = 4096;

/// Position of the record count in a v2 batch header.
const RECORDS_COUNT_AT: usize = 57;
const _: () = assert!(RECORDS_COUNT_AT + 4 == BATCH_HEADER_BYTES);

/// Whole record batches of one segment, left in the segment file.
///
/// The range holds the file open: when retention deletes the segment or the cleaner replaces
/// it, only the name goes, and the bytes stay readable through the range until it is dropped
/// (their disk space stays taken until then too). What one range pins is bounded by the read
/// that made it: at most its `max_bytes`, itself at most
/// [`READ_BYTES_MAX`](crate::READ_BYTES_MAX), or a single first batch larger than that
/// (KIP-74).
///
/// ```
/// use herald_storage::{LogConfig, PartitionLog, RangedBatches, build_batch};
/// let dir = tempfile::tempdir().unwrap();
/// let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
/// let info = log.append(&build_batch(1_700_000_000_000, &[], &[b"a", b"b"], None)).unwrap();
/// log.sync_to(info.last_offset + 1).unwrap();
/// let read = log.read_visible_below_ranged(0, u64::MAX, 1 << 20, true).unwrap();
/// let RangedBatches::File(range) = read.batches else { panic!("a real file has a descriptor") };
/// assert_eq!(range.records(), 2);
/// assert!(range.raw_fd().is_some());
/// let copied = log.read_visible(0, 1 << 20, true).unwrap();
/// assert_eq!(range.to_bytes().unwrap(), copied.batches);
/// ```
#[derive(Debug, Clone)]
pub struct FileRange {
    file: Arc<dyn StorageFile>,
    position: u64,
    len: u64,
    records: u64,
}

impl FileRange {
    /// Position of the range's first byte in the segment file.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Length of the range in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the range holds no batch.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records in the range's batches (the sum of their record counts).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The file's descriptor for `sendfile(2)` from [`position`](Self::position); valid as
    /// long as this range (or a clone of it) lives.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.file.raw_fd()
    }

    /// Reads the range's bytes from `offset` (counted from the range's start) into `buf`;
    /// fewer than `buf.len()` only at the range's end, or if the file was cut short.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let left = usize::try_from(self.len.saturating_sub(offset)).unwrap_or(usize::MAX);
        let n = buf.len().min(left);
        if n == 0 {
            return Ok(0);
        }
        self.file.read_at(&mut buf[..n], self.position + offset)
    }

    /// The whole range copied into memory.
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        let len = usize::try_from(self.len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "range too long"))?;
        let mut buf = vec![0u8; len];
        read_exact_at(self.file.as_ref(), &mut buf, self.position)?;
        Ok(Bytes::from(buf))
    }
}

/// The batches of a [`PartitionLog::read_visible_below_ranged`].
#[derive(Debug, Clone)]
pub enum RangedBatches {
    /// Copied into memory: there was nothing to read, or the file has no descriptor to send
    /// from (the simulated file system).
    Bytes(Bytes),
    /// Left in the segment file.
    File(FileRange),
}

impl RangedBatches {
    /// Length of the batches in bytes.
    pub fn len(&self) -> u64 {
        match self {
            RangedBatches::Bytes(bytes) => bytes.len() as u64,
            RangedBatches::File(range) => range.len(),
        }
    }

    /// Whether there is no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`PartitionLog::read_visible_below_ranged`] returns: a
/// [`ReadOutcome`](super::ReadOutcome) whose batches may be left in their file.
#[derive(Debug, Clone)]
pub struct RangedReadOutcome {
    /// The batches, as a file range or in memory.
    pub batches: RangedBatches,
    /// As [`ReadOutcome::high_watermark`](super::ReadOutcome::high_watermark).
    pub high_watermark: u64,
    /// As [`ReadOutcome::log_start`](super::ReadOutcome::log_start).
    pub log_start: u64,
}

impl PartitionLog {
    /// [`read_visible_below`](Self::read_visible_below) without reading the records: the same
    /// batches under the same rules (whole batches wholly below the visible end and
    /// `stable_end`, within `max_bytes` unless the first alone is larger and `at_least_one`,
    /// one segment at most), as a [`FileRange`] of their segment file. Only batch headers are
    /// read, to find the last whole batch that fits. A file without a descriptor (the
    /// simulated file system) is read into memory instead.
    pub fn read_visible_below_ranged(
        &self,
        offset: u64,
        stable_end: u64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<RangedReadOutcome, ReadError> {
        let end = self.offsets().visible_end.min(stable_end);
        let start = match self.read_start(offset, end)? {
            Start::Nothing {
                high_watermark,
                log_start,
            } => {
                return Ok(RangedReadOutcome {
                    batches: RangedBatches::Bytes(Bytes::new()),
                    high_watermark,
                    log_start,
                });
            }
            Start::At(start) => start,
        };
        let (high_watermark, log_start) = (start.high_watermark, start.log_start);
        let batches = if start.file.raw_fd().is_some() {
            RangedBatches::File(start.range(max_bytes, at_least_one)?)
        } else {
            RangedBatches::Bytes(start.read_bytes(max_bytes, at_least_one)?)
        };
        Ok(RangedReadOutcome {
            batches,
            high_watermark,
            log_start,
        })
    }
}

impl ReadStart {
    /// The batches [`ReadStart::read_bytes`] would keep, found from their headers alone.
    fn range(self, max_bytes: usize, at_least_one: bool) -> Result<FileRange, ReadError> {
        let limit = self.pos + self.window_bytes(max_bytes, at_least_one) as u64;
        let mut window = [0u8; HEADER_WINDOW_BYTES];
        let (mut window_pos, mut window_len) = (self.pos, 0usize);
        let mut end = self.pos;
        let mut records = 0u64;
        // Every batch is at least a header long, so fewer bytes left than that hold none.
        while limit - end >= BATCH_HEADER_BYTES as u64 {
            let in_window = end + BATCH_HEADER_BYTES as u64 <= window_pos + window_len as u64;
            if !in_window {
                window_len = usize::try_from(limit - end)
                    .unwrap_or(usize::MAX)
                    .min(HEADER_WINDOW_BYTES);
                read_exact_at(self.file.as_ref(), &mut window[..window_len], end)?;
                window_pos = end;
            }
            let at = (end - window_pos) as usize;
            let head = &window[at..at + BATCH_HEADER_BYTES];
            let Some(len) = batch::announced_len(head) else {
                break;
            };
            if limit - end < len as u64 || batch::announced_last_offset(head) >= self.high_watermark
            {
                break;
            }
            let mut count = [0u8; 4];
            count.copy_from_slice(&head[RECORDS_COUNT_AT..BATCH_HEADER_BYTES]);
            records += u64::try_from(i32::from_be_bytes(count)).unwrap_or(0);
            end += len as u64;
        }
        // The window never reaches past the segment's whole batches; a range that did would
        // send bytes no append finished.
        if end > self.size {
            return Err(ReadError::Corrupt {
                segment_base: self.segment_base,
                position: end,
                reason: "range runs past the segment end",
            });
        }
        Ok(FileRange {
            file: self.file,
            position: self.pos,
            len: end - self.pos,
            records,
        })
    }
}
