//! An encoding buffer that references large record batches instead of copying them, so a
//! Fetch response goes to the socket as the stored bytes themselves plus the small pieces of
//! protocol around them.
//!
//! `kafka-protocol` writes a response's records with `put_slice(&records[..])`; this buffer
//! recognises those slices by address among the batches it was given and keeps a clone of the
//! `Bytes` handle (a reference count) in place of a copy.
//!
//! Batches left in their segment files ([`FileRange`]s, sent with `sendfile(2)`) are not in
//! memory at all. The response carries a [`placeholder`] of the range's length in their place,
//! so the encoder writes the right length fields and the frame size comes out exact; the
//! placeholders are slices of one read-only mapping of zero pages, and this buffer turns each
//! into a [`Part::File`] of the next range, in the order the encoder meets them.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::OnceLock;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use herald_storage::FileRange;
use kafka_protocol::protocol::buf::ByteBufMut;

/// Slices shorter than this are copied: a reference is not worth a separate write for them.
const SHARE_BYTES_MIN: usize = 4096;

/// The longest range a placeholder can stand for: a read's window
/// ([`herald_storage::READ_BYTES_MAX`]) or one batch larger than it (at most
/// [`herald_storage::BATCH_BYTES_MAX`]). Address space only: the pages are never written, and
/// the encoder never reads them.
const PLACEHOLDER_BYTES: usize = {
    let batch = herald_storage::BATCH_BYTES_MAX as usize;
    if batch > herald_storage::READ_BYTES_MAX {
        batch
    } else {
        herald_storage::READ_BYTES_MAX
    }
};

/// One piece of an encoded response, in order.
#[derive(Debug, Clone)]
pub(crate) enum Part {
    /// Bytes in memory.
    Bytes(Bytes),
    /// Record batches still in their segment file.
    File(FileRange),
}

impl Part {
    /// Length in bytes.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Part::Bytes(bytes) => bytes.len() as u64,
            Part::File(range) => range.len(),
        }
    }
}

/// The read-only zero pages placeholders are cut from, mapped once; `None` if the mapping
/// failed (Fetch then reads its batches into memory).
fn zero_pages() -> Option<&'static [u8]> {
    static PAGES: OnceLock<Option<&'static [u8]>> = OnceLock::new();
    *PAGES.get_or_init(|| {
        // SAFETY: an anonymous private mapping with no address hint touches no existing
        // memory; its result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PLACEHOLDER_BYTES,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED || ptr.is_null() {
            tracing::warn!(error = %std::io::Error::last_os_error(), "could not map placeholder pages; Fetch reads batches into memory");
            return None;
        }
        // SAFETY: the mapping is `PLACEHOLDER_BYTES` long, readable, zero-filled by the
        // kernel, never written (PROT_READ) and never unmapped, so it lives as long as a
        // `'static` slice must.
        Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), PLACEHOLDER_BYTES) })
    })
}

/// Bytes of `len` standing in a response for a [`FileRange`] of that length until
/// [`SegmentedBuf`] replaces them; `None` if `len` is longer than any range can be or the
/// pages could not be mapped.
pub(crate) fn placeholder(len: u64) -> Option<Bytes> {
    let len = usize::try_from(len).ok()?;
    let pages = zero_pages()?;
    pages.get(..len).map(Bytes::from_static)
}

/// Whether `bytes` are a placeholder (they start where every placeholder starts).
pub(crate) fn is_placeholder(bytes: &[u8]) -> bool {
    zero_pages().is_some_and(|pages| std::ptr::eq(pages.as_ptr(), bytes.as_ptr()))
}

pub(crate) struct SegmentedBuf {
    /// Finished parts, in order.
    parts: Vec<Part>,
    /// Bytes in `parts`.
    parts_len: usize,
    /// The part being written.
    tail: BytesMut,
    /// Record batches that may be referenced rather than copied.
    shared: Vec<Bytes>,
    /// The ranges behind the placeholders, in the order the encoder writes them.
    files: VecDeque<FileRange>,
    /// Set when the encoder went back before the tail (it never does for the responses this
    /// is used with), or a placeholder did not match the next range; the result is then
    /// unusable, and the caller encodes by copying instead if it can.
    went_back: bool,
    scratch: Vec<u8>,
}

impl SegmentedBuf {
    pub(crate) fn new(shared: Vec<Bytes>, files: Vec<FileRange>) -> Self {
        SegmentedBuf {
            parts: Vec::new(),
            parts_len: 0,
            tail: BytesMut::with_capacity(1024),
            shared,
            files: files.into(),
            went_back: false,
            scratch: Vec::new(),
        }
    }

    /// The encoded parts, or `None` if the encoder needed to rewrite an earlier part or the
    /// placeholders did not match the ranges one to one.
    pub(crate) fn finish(mut self) -> Option<Vec<Part>> {
        if self.went_back || !self.files.is_empty() {
            return None;
        }
        if !self.tail.is_empty() {
            self.parts.push(Part::Bytes(self.tail.freeze()));
        }
        Some(self.parts)
    }

    /// Ends the tail as a part of its own, so that `part` can follow it.
    fn push_part(&mut self, part: Part) {
        if !self.tail.is_empty() {
            let head = self.tail.split().freeze();
            self.parts_len += head.len();
            self.parts.push(Part::Bytes(head));
        }
        self.parts_len += part.len() as usize;
        self.parts.push(part);
    }

    pub(crate) fn len(&self) -> usize {
        self.parts_len + self.tail.len()
    }

    fn shared_for(&self, src: &[u8]) -> Option<Bytes> {
        if src.len() < SHARE_BYTES_MIN {
            return None;
        }
        self.shared
            .iter()
            .find(|bytes| bytes.as_ptr() == src.as_ptr() && bytes.len() == src.len())
            .cloned()
    }
}

// SAFETY: every method forwards to the `BytesMut` tail, which upholds `BufMut`'s contract;
// `put_slice` only appends whole parts in order, which `chunk_mut` never exposes.
unsafe impl BufMut for SegmentedBuf {
    fn remaining_mut(&self) -> usize {
        self.tail.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of the chunk `chunk_mut` returned, which
        // is the tail's own chunk.
        unsafe { self.tail.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.tail.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if is_placeholder(src) {
            // Placeholders are never copied, whatever their size: they hold no records.
            match self.files.pop_front() {
                Some(range) if range.len() == src.len() as u64 => {
                    self.push_part(Part::File(range));
                }
                _ => self.went_back = true,
            }
            return;
        }
        match self.shared_for(src) {
            Some(bytes) => self.push_part(Part::Bytes(bytes)),
            None => self.tail.extend_from_slice(src),
        }
    }
}

impl ByteBufMut for SegmentedBuf {
    fn offset(&self) -> usize {
        self.len()
    }

    fn seek(&mut self, offset: usize) {
        match offset.checked_sub(self.parts_len) {
            Some(in_tail) => self.tail.resize(in_tail, 0),
            None => self.went_back = true,
        }
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let start = r.start.checked_sub(self.parts_len);
        let end = r.end.checked_sub(self.parts_len);
        match (start, end) {
            (Some(start), Some(end)) if start <= end && end <= self.tail.len() => {
                &mut self.tail[start..end]
            }
            _ => {
                self.went_back = true;
                self.scratch.clear();
                self.scratch.resize(r.len(), 0);
                &mut self.scratch
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use herald_storage::{LogConfig, PartitionLog, RangedBatches, build_batch};

    /// The bytes of a bytes part.
    fn bytes(part: &Part) -> &Bytes {
        match part {
            Part::Bytes(bytes) => bytes,
            Part::File(_) => panic!("a file part where bytes were expected"),
        }
    }

    /// A log on real files holding `batches` batches of `values` values of 1 KiB each, fsynced.
    pub(crate) fn log_on_disk(
        dir: &std::path::Path,
        config: LogConfig,
        batches: usize,
        values: usize,
    ) -> PartitionLog {
        let log = PartitionLog::open(dir, config).unwrap();
        for batch in 0..batches {
            let values: Vec<Vec<u8>> = (0..values).map(|v| vec![(batch + v) as u8; 1024]).collect();
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            log.append(&build_batch(1_700_000_000_000, &[], &refs, None))
                .unwrap();
        }
        log.flush().unwrap();
        log
    }

    /// The range a ranged read of `log` at `offset` returns.
    pub(crate) fn range_at(log: &PartitionLog, offset: u64, max_bytes: usize) -> FileRange {
        match log
            .read_visible_below_ranged(offset, u64::MAX, max_bytes, true)
            .unwrap()
            .batches
        {
            RangedBatches::File(range) => range,
            RangedBatches::Bytes(_) => panic!("real files give ranges"),
        }
    }

    #[test]
    fn large_shared_slices_are_referenced_and_the_rest_copied() {
        let big = Bytes::from(vec![7u8; 10_000]);
        let other = vec![9u8; 10_000];
        let mut buf = SegmentedBuf::new(vec![big.clone()], Vec::new());
        buf.put_i32(5);
        buf.put_slice(&big);
        buf.put_slice(&other);
        buf.put_u8(1);
        assert_eq!(buf.len(), 4 + 10_000 + 10_000 + 1);
        let parts = buf.finish().unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            bytes(&parts[1]).as_ptr(),
            big.as_ptr(),
            "referenced, not copied"
        );
        let joined: Vec<u8> = parts
            .iter()
            .flat_map(|p| bytes(p).iter().copied())
            .collect();
        let mut expected = vec![0, 0, 0, 5];
        expected.extend_from_slice(&big);
        expected.extend_from_slice(&other);
        expected.push(1);
        assert_eq!(joined, expected);
    }

    #[test]
    fn rewriting_an_earlier_part_is_reported() {
        let big = Bytes::from(vec![7u8; 10_000]);
        let mut buf = SegmentedBuf::new(vec![big.clone()], Vec::new());
        buf.put_i32(0);
        buf.put_slice(&big);
        buf.range(0..4).copy_from_slice(&[1, 2, 3, 4]);
        assert!(buf.finish().is_none());
    }

    #[test]
    fn placeholders_become_their_file_ranges_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_on_disk(dir.path(), LogConfig::default(), 6, 4);
        let first = range_at(&log, 0, 10_000);
        let second = range_at(&log, 12, 1 << 20);
        assert!(!first.is_empty() && second.len() > first.len());
        let (one, two) = (
            placeholder(first.len()).unwrap(),
            placeholder(second.len()).unwrap(),
        );
        assert!(is_placeholder(&one) && !is_placeholder(&[0u8; 16]));
        let mut buf = SegmentedBuf::new(Vec::new(), vec![first.clone(), second.clone()]);
        buf.put_i32(7);
        buf.put_slice(&one);
        buf.put_u8(1);
        buf.put_slice(&two);
        assert_eq!(buf.len() as u64, 4 + first.len() + 1 + second.len());
        let parts = buf.finish().unwrap();
        assert_eq!(parts.len(), 4);
        assert_eq!(bytes(&parts[0]).as_ref(), &[0, 0, 0, 7]);
        assert_eq!(bytes(&parts[2]).as_ref(), &[1]);
        for (part, range) in [(&parts[1], &first), (&parts[3], &second)] {
            let Part::File(got) = part else {
                panic!("a placeholder stayed bytes");
            };
            assert_eq!((got.position(), got.len()), (range.position(), range.len()));
        }
    }

    #[test]
    fn placeholders_without_their_ranges_make_the_encoding_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_on_disk(dir.path(), LogConfig::default(), 3, 4);
        let range = range_at(&log, 0, 1 << 20);
        let stand_in = placeholder(range.len()).unwrap();
        // No range for the placeholder.
        let mut buf = SegmentedBuf::new(Vec::new(), Vec::new());
        buf.put_slice(&stand_in);
        assert!(buf.finish().is_none());
        // A range of another length.
        let mut buf = SegmentedBuf::new(Vec::new(), vec![range.clone()]);
        buf.put_slice(&stand_in[..stand_in.len() - 1]);
        assert!(buf.finish().is_none());
        // A range no placeholder stood for.
        let mut buf = SegmentedBuf::new(Vec::new(), vec![range]);
        buf.put_i32(1);
        assert!(buf.finish().is_none());
    }
}
