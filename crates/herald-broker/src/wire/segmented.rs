//! An encoding buffer that references large record batches instead of copying them, so a
//! Fetch response goes to the socket as the stored bytes themselves plus the small pieces of
//! protocol around them.
//!
//! `kafka-protocol` writes a response's records with `put_slice(&records[..])`; this buffer
//! recognises those slices by address among the batches it was given and keeps a clone of the
//! `Bytes` handle (a reference count) in place of a copy.

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Slices shorter than this are copied: a reference is not worth a separate write for them.
const SHARE_BYTES_MIN: usize = 4096;

pub(crate) struct SegmentedBuf {
    /// Finished parts, in order.
    parts: Vec<Bytes>,
    /// Bytes in `parts`.
    parts_len: usize,
    /// The part being written.
    tail: BytesMut,
    /// Record batches that may be referenced rather than copied.
    shared: Vec<Bytes>,
    /// Set when the encoder went back before the tail (it never does for the responses this
    /// is used with); the result is then unusable and the caller encodes by copying instead.
    went_back: bool,
    scratch: Vec<u8>,
}

impl SegmentedBuf {
    pub(crate) fn new(shared: Vec<Bytes>) -> Self {
        SegmentedBuf {
            parts: Vec::new(),
            parts_len: 0,
            tail: BytesMut::with_capacity(1024),
            shared,
            went_back: false,
            scratch: Vec::new(),
        }
    }

    /// The encoded parts, or `None` if the encoder needed to rewrite an earlier part.
    pub(crate) fn finish(mut self) -> Option<Vec<Bytes>> {
        if self.went_back {
            return None;
        }
        if !self.tail.is_empty() {
            self.parts.push(self.tail.freeze());
        }
        Some(self.parts)
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
        match self.shared_for(src) {
            Some(bytes) => {
                if !self.tail.is_empty() {
                    let head = self.tail.split().freeze();
                    self.parts_len += head.len();
                    self.parts.push(head);
                }
                self.parts_len += bytes.len();
                self.parts.push(bytes);
            }
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
mod tests {
    use super::*;

    #[test]
    fn large_shared_slices_are_referenced_and_the_rest_copied() {
        let big = Bytes::from(vec![7u8; 10_000]);
        let other = vec![9u8; 10_000];
        let mut buf = SegmentedBuf::new(vec![big.clone()]);
        buf.put_i32(5);
        buf.put_slice(&big);
        buf.put_slice(&other);
        buf.put_u8(1);
        assert_eq!(buf.len(), 4 + 10_000 + 10_000 + 1);
        let parts = buf.finish().unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1].as_ptr(), big.as_ptr(), "referenced, not copied");
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let mut expected = vec![0, 0, 0, 5];
        expected.extend_from_slice(&big);
        expected.extend_from_slice(&other);
        expected.push(1);
        assert_eq!(joined, expected);
    }

    #[test]
    fn rewriting_an_earlier_part_is_reported() {
        let big = Bytes::from(vec![7u8; 10_000]);
        let mut buf = SegmentedBuf::new(vec![big.clone()]);
        buf.put_i32(0);
        buf.put_slice(&big);
        buf.range(0..4).copy_from_slice(&[1, 2, 3, 4]);
        assert!(buf.finish().is_none());
    }
}
