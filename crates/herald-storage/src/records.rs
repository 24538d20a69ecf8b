//! Decoding the records inside a batch: to find exact per-record timestamps for
//! `offset_for_timestamp`, to recompress a batch on append for a log configured with a
//! codec (Kafka `compression.type` other than `producer`), and to find the keys the log cleaner
//! compacts by. The read path, and the append path of every other log, move batches as bytes.

use std::io::Read;

use crate::batch::{BATCH_HEADER_BYTES, BatchHeader, COMPRESSION_MASK, TIMESTAMP_TYPE_BIT};

/// Decompressed record bytes allowed per batch, so a compression bomb cannot exhaust memory.
pub(crate) const DECOMPRESSED_BYTES_MAX: u64 = 256 << 20;

/// Why a batch's records could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecodeFault;

/// First record of `batch` with offset >= `min_offset` and timestamp >= `ts`, as (offset, timestamp).
pub(crate) fn first_at_or_after(
    batch: &[u8],
    h: &BatchHeader,
    ts: i64,
    min_offset: u64,
) -> Result<Option<(u64, i64)>, DecodeFault> {
    let base = h.base_offset as u64;
    if h.attributes & TIMESTAMP_TYPE_BIT != 0 {
        // Log-append-time batches give every record the batch's max timestamp.
        let first = base.max(min_offset);
        return Ok((h.max_timestamp >= ts && first <= h.last_offset() as u64)
            .then_some((first, h.max_timestamp)));
    }
    let body = batch.get(BATCH_HEADER_BYTES..).ok_or(DecodeFault)?;
    let owned;
    let records: &[u8] = match h.attributes & COMPRESSION_MASK {
        0 => body,
        codec => {
            owned = decompress(codec, body)?;
            &owned
        }
    };
    let mut r = Cursor {
        buf: records,
        pos: 0,
    };
    for _ in 0..h.records_count {
        let len = r.varint()?;
        let len = usize::try_from(len).map_err(|_| DecodeFault)?;
        let end = r.pos.checked_add(len).ok_or(DecodeFault)?;
        // A record is never empty; requiring progress bounds the loop by the buffer's length.
        if len == 0 || end > records.len() {
            return Err(DecodeFault);
        }
        let _attributes = r.byte()?;
        let ts_delta = r.varint()?;
        let offset_delta = r.varint()?;
        if r.pos > end {
            return Err(DecodeFault);
        }
        r.pos = end;
        let offset = base.checked_add_signed(offset_delta).ok_or(DecodeFault)?;
        let record_ts = h.base_timestamp.wrapping_add(ts_delta);
        if offset >= min_offset && record_ts >= ts {
            return Ok(Some((offset, record_ts)));
        }
    }
    Ok(None)
}

fn decompress(codec: i16, body: &[u8]) -> Result<Vec<u8>, DecodeFault> {
    let mut out = Vec::new();
    let limit = DECOMPRESSED_BYTES_MAX;
    let result = match codec {
        1 => flate2::read::GzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        2 => return snappy(body),
        3 => lz4_flex::frame::FrameDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        4 => zstd::stream::read::Decoder::new(body)
            .map_err(|_| DecodeFault)?
            .take(limit)
            .read_to_end(&mut out),
        _ => return Err(DecodeFault),
    };
    result.map_err(|_| DecodeFault)?;
    Ok(out)
}

/// Kafka's snappy is either raw snappy or the xerial (snappy-java) framing: a 16-byte header
/// then blocks of `len u32 BE` + raw snappy block.
fn snappy(body: &[u8]) -> Result<Vec<u8>, DecodeFault> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    let mut decoder = snap::raw::Decoder::new();
    let mut raw = |block: &[u8], out: &mut Vec<u8>| -> Result<(), DecodeFault> {
        let n = snap::raw::decompress_len(block).map_err(|_| DecodeFault)?;
        if out.len() as u64 + n as u64 > DECOMPRESSED_BYTES_MAX {
            return Err(DecodeFault);
        }
        let start = out.len();
        out.resize(start + n, 0);
        decoder
            .decompress(block, &mut out[start..])
            .map_err(|_| DecodeFault)?;
        Ok(())
    };
    let mut out = Vec::new();
    if body.starts_with(XERIAL_MAGIC) && body.len() >= 16 {
        let mut pos = 16;
        while pos < body.len() {
            let len_bytes: [u8; 4] = body
                .get(pos..pos + 4)
                .and_then(|s| s.try_into().ok())
                .ok_or(DecodeFault)?;
            let len = u32::from_be_bytes(len_bytes) as usize;
            pos += 4;
            let block = body.get(pos..pos + len).ok_or(DecodeFault)?;
            raw(block, &mut out)?;
            pos += len;
        }
    } else {
        raw(body, &mut out)?;
    }
    Ok(out)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, DecodeFault> {
        let b = *self.buf.get(self.pos).ok_or(DecodeFault)?;
        self.pos += 1;
        Ok(b)
    }
    /// A zig-zag varint of up to 64 bits (Kafka's varint and varlong share the encoding).
    fn varint(&mut self) -> Result<i64, DecodeFault> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(DecodeFault)
    }
}

/// Where one record lies in a batch's uncompressed record bytes, and what the cleaner needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordRef {
    /// The record's bytes, its length prefix included: `[start, end)`.
    pub start: usize,
    pub end: usize,
    pub offset_delta: i64,
    pub ts_delta: i64,
    /// The key's bytes `[start, end)`, or `None` for a null key.
    pub key: Option<(usize, usize)>,
    /// The value's bytes `[start, end)`, or `None` for a null value (a tombstone).
    pub value: Option<(usize, usize)>,
}

/// Parses every record of uncompressed `records` (`count` of them, as the batch header says).
pub(crate) fn parse_records(records: &[u8], count: i32) -> Result<Vec<RecordRef>, DecodeFault> {
    let count = usize::try_from(count).map_err(|_| DecodeFault)?;
    // Every record takes at least one byte, which bounds the allocation by the input.
    if count > records.len() {
        return Err(DecodeFault);
    }
    let mut out = Vec::with_capacity(count);
    let mut r = Cursor {
        buf: records,
        pos: 0,
    };
    for _ in 0..count {
        let start = r.pos;
        let len = usize::try_from(r.varint()?).map_err(|_| DecodeFault)?;
        let end = r.pos.checked_add(len).ok_or(DecodeFault)?;
        if len == 0 || end > records.len() {
            return Err(DecodeFault);
        }
        let _attributes = r.byte()?;
        let ts_delta = r.varint()?;
        let offset_delta = r.varint()?;
        let key_len = r.varint()?;
        let key = if key_len < 0 {
            None
        } else {
            let key_start = r.pos;
            let key_end = usize::try_from(key_len)
                .ok()
                .and_then(|l| key_start.checked_add(l))
                .filter(|e| *e <= end)
                .ok_or(DecodeFault)?;
            r.pos = key_end;
            Some((key_start, key_end))
        };
        let value_len = r.varint()?;
        let value = if value_len < 0 {
            None
        } else {
            let value_start = r.pos;
            let value_end = usize::try_from(value_len)
                .ok()
                .and_then(|l| value_start.checked_add(l))
                .filter(|e| *e <= end)
                .ok_or(DecodeFault)?;
            Some((value_start, value_end))
        };
        if r.pos > end {
            return Err(DecodeFault);
        }
        r.pos = end;
        out.push(RecordRef {
            start,
            end,
            offset_delta,
            ts_delta,
            key,
            value,
        });
    }
    Ok(out)
}

/// One record of a stored batch, decoded: what a reader of a compacted log checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record's offset.
    pub offset: u64,
    /// Its key (`None` for a null key).
    pub key: Option<Vec<u8>>,
    /// Its value (`None` for a tombstone).
    pub value: Option<Vec<u8>>,
}

/// Decodes every record of concatenated batches as [`crate::PartitionLog::read`] returns them
/// (decompressing as needed); `None` if any batch cannot be decoded.
///
/// ```
/// use herald_storage::{build_keyed_batch, decode_records};
/// let batch = build_keyed_batch(1, &[(Some(b"k"), Some(b"v"))], None);
/// let records = decode_records(&batch).unwrap();
/// assert_eq!(records[0].value.as_deref(), Some(&b"v"[..]));
/// ```
pub fn decode_records(mut batches: &[u8]) -> Option<Vec<StoredRecord>> {
    let mut out = Vec::new();
    while !batches.is_empty() {
        let h = crate::batch::parse_header(batches)?;
        let batch = batches.get(..h.total_bytes)?;
        batches = &batches[h.total_bytes..];
        if h.attributes & crate::batch::CONTROL_BIT != 0 {
            continue;
        }
        let records = uncompressed_records(batch, &h).ok()?;
        for r in parse_records(&records, h.records_count).ok()? {
            let bytes = |range: Option<(usize, usize)>| range.map(|(s, e)| records[s..e].to_vec());
            out.push(StoredRecord {
                offset: (h.base_offset as u64).checked_add_signed(r.offset_delta)?,
                key: bytes(r.key),
                value: bytes(r.value),
            });
        }
    }
    Some(out)
}

/// The records of `batch` (header at its start) decompressed, or as they are if uncompressed.
pub(crate) fn uncompressed_records(batch: &[u8], h: &BatchHeader) -> Result<Vec<u8>, DecodeFault> {
    let body = batch.get(BATCH_HEADER_BYTES..).ok_or(DecodeFault)?;
    match h.attributes & COMPRESSION_MASK {
        0 => Ok(body.to_vec()),
        codec => decompress(codec, body),
    }
}

/// Snappy blocks of the xerial framing hold at most this many input bytes each.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

/// Compresses record bytes with `codec` (attribute numbering), as Kafka clients expect them:
/// gzip, snappy in the xerial framing (which every client reads), LZ4 frames, zstd frames.
pub(crate) fn compress(codec: i16, records: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    match codec {
        0 => Ok(records.to_vec()),
        1 => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(records)?;
            encoder.finish()
        }
        2 => {
            let mut out = b"\x82SNAPPY\x00".to_vec();
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // minimum compatible version
            let mut encoder = snap::raw::Encoder::new();
            for block in records.chunks(XERIAL_BLOCK_BYTES) {
                let compressed = encoder.compress_vec(block).map_err(std::io::Error::other)?;
                let len = u32::try_from(compressed.len()).map_err(std::io::Error::other)?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(out)
        }
        3 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
            encoder.write_all(records)?;
            encoder.finish().map_err(std::io::Error::other)
        }
        4 => zstd::stream::encode_all(records, 3),
        other => Err(std::io::Error::other(format!("unknown codec {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build_batch, check_batch};

    #[test]
    fn finds_the_first_record_at_or_after_a_timestamp() {
        let b = build_batch(1000, &[0, 30, 10, 50], &[b"a", b"b", b"c", b"d"], None);
        let h = check_batch(&b, 1 << 20).unwrap();
        assert_eq!(first_at_or_after(&b, &h, 1005, 0), Ok(Some((1, 1030))));
        assert_eq!(first_at_or_after(&b, &h, 1010, 2), Ok(Some((2, 1010))));
        assert_eq!(first_at_or_after(&b, &h, 1051, 0), Ok(None));
        assert_eq!(first_at_or_after(&b, &h, i64::MIN, 3), Ok(Some((3, 1050))));
    }

    /// Re-encodes an uncompressed batch's records with `codec`, fixing length and CRC.
    fn compress(batch: &[u8], codec: i16) -> Vec<u8> {
        use std::io::Write;
        let records = &batch[BATCH_HEADER_BYTES..];
        let body = match codec {
            1 => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(records).unwrap();
                e.finish().unwrap()
            }
            2 => snap::raw::Encoder::new().compress_vec(records).unwrap(),
            3 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(records).unwrap();
                e.finish().unwrap()
            }
            4 => zstd::encode_all(records, 1).unwrap(),
            // Snappy in xerial framing, as the Java client writes it.
            _ => {
                let block = snap::raw::Encoder::new().compress_vec(records).unwrap();
                let mut out = b"\x82SNAPPY\x00".to_vec();
                out.extend_from_slice(&1u32.to_be_bytes());
                out.extend_from_slice(&1u32.to_be_bytes());
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
                out
            }
        };
        let mut b = batch[..BATCH_HEADER_BYTES].to_vec();
        b.extend_from_slice(&body);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        let codec = if codec > 4 { 2 } else { codec };
        b[21..23].copy_from_slice(&codec.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn decodes_every_kafka_compression_codec() {
        let plain = build_batch(1000, &[0, 30, 10, 50], &[b"a", b"b", b"c", b"d"], None);
        for codec in 1..=5 {
            let b = compress(&plain, codec);
            let h = check_batch(&b, 1 << 20).unwrap();
            assert_eq!(
                first_at_or_after(&b, &h, 1005, 0),
                Ok(Some((1, 1030))),
                "codec {codec}"
            );
            assert_eq!(
                first_at_or_after(&b, &h, 1040, 0),
                Ok(Some((3, 1050))),
                "codec {codec}"
            );
        }
    }

    #[test]
    fn garbage_records_are_a_fault_not_a_panic_or_hang() {
        let mut b = build_batch(1000, &[0], &[b"a"], None);
        // Claim a huge record count over a zero-length record.
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        b.truncate(BATCH_HEADER_BYTES);
        b.push(0);
        let h = crate::batch::parse_header(&b).unwrap();
        assert_eq!(first_at_or_after(&b, &h, 0, 0), Err(DecodeFault));
        for codec in 1..=4 {
            let mut c = b.clone();
            c[21..23].copy_from_slice(&(codec as i16).to_be_bytes());
            let h = crate::batch::parse_header(&c).unwrap();
            assert_eq!(
                first_at_or_after(&c, &h, 0, 0),
                Err(DecodeFault),
                "codec {codec}"
            );
        }
    }
}
