//! The recovery checkpoint: the log start, a point up to which segments and indexes are known to be
//! fsynced, and the idempotent-producer state at that point. Reopening scans only what follows it.
//!
//! Written to `checkpoint.tmp`, fsynced, renamed over `checkpoint`, and the directory fsynced, so
//! a crash leaves either the old or the new checkpoint, never a mix. See docs/storage-format.md.

use std::collections::VecDeque;
use std::io;
use std::path::Path;

use crate::env::FileSystem;
use crate::producer::{BATCHES_PER_PRODUCER, BatchMeta, ProducerEntry, ProducerState};

pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
pub(crate) const CHECKPOINT_TMP_FILE: &str = "checkpoint.tmp";
const MAGIC: &[u8; 4] = b"HRCK";
const VERSION: u16 = 1;
const FIXED_BYTES: usize = 52;
const PRODUCER_BYTES: usize = 11;
const BATCH_META_BYTES: usize = 24;
/// Refuse to read checkpoints larger than this (16M producers would be far more).
const CHECKPOINT_BYTES_MAX: u64 = 1 << 30;
const _: () = assert!(FIXED_BYTES == 4 + 2 + 2 + 8 * 5 + 4);

/// The contents of a checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Checkpoint {
    pub log_start: u64,
    /// Segment holding the recovery point.
    pub segment_base: u64,
    /// Bytes of that segment (and all of every earlier segment) known durable and valid.
    pub position: u64,
    /// The offset of the batch at `position`.
    pub next_offset: u64,
    /// Largest batch max timestamp in the segment up to `position` (-1 if none).
    pub max_timestamp: i64,
    /// Producer state after every batch below `next_offset`.
    pub producers: ProducerState,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_BYTES + 4 + self.producers.producers.len() * 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        for v in [
            self.log_start,
            self.segment_base,
            self.position,
            self.next_offset,
            self.max_timestamp as u64,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&(self.producers.producers.len() as u32).to_be_bytes());
        let mut pids: Vec<_> = self.producers.producers.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let e = &self.producers.producers[&pid];
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a checkpoint; `None` if anything about it is off (then the log scans everything).
    pub fn decode(buf: &[u8]) -> Option<Checkpoint> {
        if buf.len() < FIXED_BYTES + 4 {
            return None;
        }
        let (body, crc) = buf.split_at(buf.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        if &body[0..4] != MAGIC || u16::from_be_bytes([body[4], body[5]]) != VERSION {
            return None;
        }
        let mut r = Reader { buf: body, pos: 8 };
        let log_start = r.u64()?;
        let segment_base = r.u64()?;
        let position = r.u64()?;
        let next_offset = r.u64()?;
        let max_timestamp = r.u64()? as i64;
        let count = r.u32()?;
        let mut producers = ProducerState::default();
        for _ in 0..count {
            if r.remaining() < PRODUCER_BYTES {
                return None;
            }
            let pid = r.u64()? as i64;
            let epoch = r.u16()? as i16;
            let n = r.u8()? as usize;
            if n > BATCHES_PER_PRODUCER {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                if r.remaining() < BATCH_META_BYTES {
                    return None;
                }
                batches.push_back(BatchMeta {
                    first_seq: r.u32()? as i32,
                    last_seq: r.u32()? as i32,
                    base_offset: r.u64()?,
                    last_offset: r.u64()?,
                });
            }
            producers
                .producers
                .insert(pid, ProducerEntry { epoch, batches });
        }
        let max = crate::log::OFFSET_MAX;
        if r.remaining() != 0
            || position > u64::from(u32::MAX)
            || next_offset < segment_base
            || next_offset > max
            || log_start > max
        {
            return None;
        }
        Some(Checkpoint {
            log_start,
            segment_base,
            position,
            next_offset,
            max_timestamp,
            producers,
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let s = self.buf.get(self.pos..self.pos + N)?;
        self.pos += N;
        s.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take()?))
    }
}

/// Reads the checkpoint of `dir`; `Ok(None)` when missing or invalid.
pub(crate) fn read(fs: &dyn FileSystem, dir: &Path) -> io::Result<Option<Checkpoint>> {
    let file = match fs.open(&dir.join(CHECKPOINT_FILE), false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.len()?;
    if len > CHECKPOINT_BYTES_MAX {
        return Ok(None);
    }
    let mut buf = vec![0u8; len as usize];
    let n = file.read_at(&mut buf, 0)?;
    buf.truncate(n);
    Ok(Checkpoint::decode(&buf))
}

/// Durably replaces the checkpoint of `dir`.
pub(crate) fn write(fs: &dyn FileSystem, dir: &Path, cp: &Checkpoint) -> io::Result<()> {
    let tmp = dir.join(CHECKPOINT_TMP_FILE);
    let bytes = cp.encode();
    let file = fs.open(&tmp, true)?;
    file.set_len(0)?;
    file.write_all_at(&bytes, 0)?;
    file.sync_data()?;
    drop(file);
    fs.rename(&tmp, &dir.join(CHECKPOINT_FILE))?;
    fs.sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_any_flipped_bit() {
        let mut producers = ProducerState::default();
        producers.producers.insert(
            9,
            ProducerEntry {
                epoch: 2,
                batches: [BatchMeta {
                    first_seq: 0,
                    last_seq: 4,
                    base_offset: 10,
                    last_offset: 14,
                }]
                .into(),
            },
        );
        let cp = Checkpoint {
            log_start: 3,
            segment_base: 10,
            position: 200,
            next_offset: 15,
            max_timestamp: 77,
            producers,
        };
        let bytes = cp.encode();
        assert_eq!(Checkpoint::decode(&bytes), Some(cp));
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert_eq!(Checkpoint::decode(&b), None, "bit {i}");
        }
    }
}
