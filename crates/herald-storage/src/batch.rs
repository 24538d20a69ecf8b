//! Kafka RecordBatch v2 headers: parsing, validation (length, magic, CRC-32C) and offset rewriting.
//!
//! Layout (big-endian): baseOffset i64 @0, batchLength i32 @8 (bytes after this field),
//! partitionLeaderEpoch i32 @12, magic i8 @16, crc u32 @17 (CRC-32C of bytes @21..end),
//! attributes i16 @21, lastOffsetDelta i32 @23, baseTimestamp i64 @27, maxTimestamp i64 @35,
//! producerId i64 @43, producerEpoch i16 @51, baseSequence i32 @53, recordsCount i32 @57,
//! records @61. Base offset and leader epoch lie outside the CRC, so rewriting them keeps it valid.

use crate::error::AppendError;

/// Bytes of the v2 batch header before the records.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before the part `batchLength` counts (baseOffset + batchLength).
pub const LOG_OVERHEAD_BYTES: usize = 12;
const _: () = assert!(BATCH_HEADER_BYTES == 61 && LOG_OVERHEAD_BYTES == 12);

const MAGIC_V2: i8 = 2;
const CRC_START: usize = 21;
/// Attributes bits 0-2: compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub(crate) const COMPRESSION_MASK: i16 = 0x07;
/// Attributes bit 3: timestamps are the broker's log append time.
pub(crate) const TIMESTAMP_TYPE_BIT: i16 = 0x08;

/// Attributes bit 4: the batch belongs to a transaction.
pub const TRANSACTIONAL_BIT: i16 = 0x10;
/// Attributes bit 5: a control batch (a transaction marker), not application records.
pub const CONTROL_BIT: i16 = 0x20;

/// Kafka's timestamp of a record that has none.
pub(crate) const NO_TIMESTAMP: i64 = -1;

/// `ts` if it is after the epoch, else [`NO_TIMESTAMP`]. A stored 0 is what a batch without
/// timestamps left in indexes and checkpoints (see [`BatchHeader::max_timestamp_known`]), so
/// it is read back as none.
pub(crate) fn known_timestamp(ts: i64) -> i64 {
    if ts > 0 { ts } else { NO_TIMESTAMP }
}

/// The fields of a v2 batch header the log uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub base_offset: i64,
    /// Whole batch size in bytes, log overhead included.
    pub total_bytes: usize,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    pub base_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// The batch's largest record timestamp, or [`NO_TIMESTAMP`] when its records carry none
    /// the log can trust, read from the header alone (records are never decoded to append).
    ///
    /// Kafka's `NO_TIMESTAMP` is -1. A producer that sets no timestamp gives every record -1,
    /// yet librdkafka then writes 0 as the batch's `maxTimestamp` (its running maximum starts
    /// at 0); Kafka's broker sees through that because it reads every record. So a batch whose
    /// first timestamp is negative, or whose max is not after the epoch, has no timestamp: it
    /// ages for retention by the time it was appended, and no time lookup finds it.
    pub(crate) fn max_timestamp_known(&self) -> i64 {
        if self.attributes & TIMESTAMP_TYPE_BIT == 0 && self.base_timestamp < 0 {
            return NO_TIMESTAMP;
        }
        known_timestamp(self.max_timestamp)
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// The whole-batch length announced by the first 12 bytes, if they are present and sane.
pub(crate) fn announced_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < LOG_OVERHEAD_BYTES {
        return None;
    }
    let len = i32_at(buf, 8);
    if len < (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
        return None;
    }
    Some(len as usize + LOG_OVERHEAD_BYTES)
}

/// The last offset of the batch at the start of `buf` (base offset plus last offset delta), for
/// a buffer [`announced_len`] accepted; a header too short to say reads as the largest offset.
pub(crate) fn announced_last_offset(buf: &[u8]) -> u64 {
    const LAST_OFFSET_DELTA_AT: usize = 23;
    if buf.len() < LAST_OFFSET_DELTA_AT + 4 {
        return u64::MAX;
    }
    let last = i64_at(buf, 0).saturating_add(i64::from(i32_at(buf, LAST_OFFSET_DELTA_AT)));
    u64::try_from(last).unwrap_or(u64::MAX)
}

/// Parses the header fields of a buffer holding at least [`BATCH_HEADER_BYTES`].
pub(crate) fn parse_header(buf: &[u8]) -> Option<BatchHeader> {
    if buf.len() < BATCH_HEADER_BYTES {
        return None;
    }
    let total_bytes = announced_len(buf)?;
    Some(BatchHeader {
        base_offset: i64_at(buf, 0),
        total_bytes,
        attributes: i16_at(buf, 21),
        last_offset_delta: i32_at(buf, 23),
        base_timestamp: i64_at(buf, 27),
        max_timestamp: i64_at(buf, 35),
        producer_id: i64_at(buf, 43),
        producer_epoch: i16_at(buf, 51),
        base_sequence: i32_at(buf, 53),
        records_count: i32_at(buf, 57),
    })
}

/// Why a single batch is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchFault {
    Truncated,
    BadLength,
    TooLarge(usize),
    BadMagic,
    BadCrc,
    BadRecordCount,
    BadCompression,
}

impl BatchFault {
    pub fn reason(self) -> &'static str {
        match self {
            BatchFault::Truncated => "batch shorter than its header or length field",
            BatchFault::BadLength => "batch length field out of range",
            BatchFault::TooLarge(_) => "batch larger than the limit",
            BatchFault::BadMagic => "magic is not 2 (only RecordBatch v2 is stored)",
            BatchFault::BadCrc => "CRC-32C mismatch",
            BatchFault::BadRecordCount => "records count does not match last offset delta",
            BatchFault::BadCompression => "unknown compression codec",
        }
    }
}

/// Checks one batch at the start of `buf` and returns its header. `buf` may hold more after it.
pub(crate) fn check_batch(buf: &[u8], batch_bytes_max: usize) -> Result<BatchHeader, BatchFault> {
    check_batch_counting(buf, batch_bytes_max, true)
}

/// [`check_batch`] for a batch the log cleaner may have rewritten: it keeps the batch's last
/// offset delta and drops records, so its records count may be anything from 0 (a producer's
/// last batch kept for its sequence numbers) to `lastOffsetDelta + 1`.
pub(crate) fn check_cleaned_batch(
    buf: &[u8],
    batch_bytes_max: usize,
) -> Result<BatchHeader, BatchFault> {
    check_batch_counting(buf, batch_bytes_max, false)
}

fn check_batch_counting(
    buf: &[u8],
    batch_bytes_max: usize,
    exact_count: bool,
) -> Result<BatchHeader, BatchFault> {
    if buf.len() < LOG_OVERHEAD_BYTES {
        return Err(BatchFault::Truncated);
    }
    let total = announced_len(buf).ok_or(BatchFault::BadLength)?;
    if total > batch_bytes_max {
        return Err(BatchFault::TooLarge(total));
    }
    if buf.len() < total || total < BATCH_HEADER_BYTES {
        return Err(BatchFault::Truncated);
    }
    let batch = &buf[..total];
    if batch[16] as i8 != MAGIC_V2 {
        return Err(BatchFault::BadMagic);
    }
    if crc32c::crc32c(&batch[CRC_START..]) != u32_at(batch, 17) {
        return Err(BatchFault::BadCrc);
    }
    let header = parse_header(batch).ok_or(BatchFault::Truncated)?;
    let full = i64::from(header.last_offset_delta) + 1;
    let count = i64::from(header.records_count);
    let count_ok = if exact_count {
        count == full
    } else {
        (0..=full).contains(&count)
    };
    if header.last_offset_delta < 0 || !count_ok {
        return Err(BatchFault::BadRecordCount);
    }
    if header.attributes & COMPRESSION_MASK > 4 {
        return Err(BatchFault::BadCompression);
    }
    Ok(header)
}

/// Validates concatenated batches of an append input; all must pass before anything is written.
pub(crate) fn validate_input(
    input: &[u8],
    batch_bytes_max: usize,
) -> Result<Vec<BatchHeader>, AppendError> {
    let mut headers = Vec::new();
    let mut pos = 0;
    if input.is_empty() {
        return Err(AppendError::CorruptBatch {
            position: 0,
            reason: "no record batch in the input",
        });
    }
    while pos < input.len() {
        match check_batch(&input[pos..], batch_bytes_max) {
            Ok(h) => {
                pos += h.total_bytes;
                headers.push(h);
            }
            Err(BatchFault::TooLarge(n)) => {
                return Err(AppendError::BatchTooLarge {
                    batch_bytes: n as u64,
                    batch_bytes_max: batch_bytes_max as u64,
                });
            }
            Err(fault) => {
                return Err(AppendError::CorruptBatch {
                    position: pos,
                    reason: fault.reason(),
                });
            }
        }
    }
    Ok(headers)
}

/// Checks a `CreateTime` batch's timestamps against the log's clock: its first timestamp may
/// lie at most `before_max_ms` in the past, its max timestamp at most `after_max_ms` in the
/// future. Batches without a timestamp pass (see [`BatchHeader::max_timestamp_known`]).
///
/// Kafka checks every record; the header's first and max timestamps bound the common case
/// (records in time order) without decoding anything.
pub(crate) fn check_timestamps(
    h: &BatchHeader,
    position: usize,
    now_ms: i64,
    before_max_ms: Option<u64>,
    after_max_ms: Option<u64>,
) -> Result<(), AppendError> {
    let max = h.max_timestamp_known();
    if max == NO_TIMESTAMP {
        return Ok(());
    }
    let distance = |a: i64, b: i64| u64::try_from(i128::from(a) - i128::from(b)).unwrap_or(0);
    let refuse = |timestamp: i64, distance_ms: u64, direction: &'static str, limit_ms: u64| {
        Err(AppendError::InvalidTimestamp {
            position,
            timestamp,
            now_ms,
            distance_ms,
            direction,
            limit_ms,
        })
    };
    if let Some(limit) = after_max_ms {
        if distance(max, now_ms) > limit {
            return refuse(max, distance(max, now_ms), "after", limit);
        }
    }
    if let Some(limit) = before_max_ms {
        let first = known_timestamp(h.base_timestamp);
        if first != NO_TIMESTAMP && distance(now_ms, first) > limit {
            return refuse(first, distance(now_ms, first), "before", limit);
        }
    }
    Ok(())
}

/// The batch the log stores in place of `batch`: its records recompressed with `codec` (when
/// that differs from theirs) and, with `append_time_ms`, marked log-append-time with that max
/// timestamp; the CRC is computed again. `None` when nothing changes.
pub(crate) fn rewrite(
    batch: &[u8],
    h: &BatchHeader,
    position: usize,
    codec: Option<i16>,
    append_time_ms: Option<i64>,
) -> Result<Option<Vec<u8>>, AppendError> {
    let recompress = codec.filter(|c| *c != h.attributes & COMPRESSION_MASK);
    if recompress.is_none() && append_time_ms.is_none() {
        return Ok(None);
    }
    let mut out = match recompress {
        None => batch[..h.total_bytes].to_vec(),
        Some(codec) => {
            let records = crate::records::uncompressed_records(&batch[..h.total_bytes], h)
                .map_err(|_| AppendError::CorruptBatch {
                    position,
                    reason: "records could not be decompressed",
                })?;
            let body = crate::records::compress(codec, &records).map_err(AppendError::Io)?;
            let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
            out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
            out.extend_from_slice(&body);
            let length = i32::try_from(out.len() - LOG_OVERHEAD_BYTES).map_err(|_| {
                AppendError::BatchTooLarge {
                    batch_bytes: out.len() as u64,
                    batch_bytes_max: i32::MAX as u64,
                }
            })?;
            out[8..12].copy_from_slice(&length.to_be_bytes());
            let attributes = (h.attributes & !COMPRESSION_MASK) | codec;
            out[21..23].copy_from_slice(&attributes.to_be_bytes());
            out
        }
    };
    if let Some(now) = append_time_ms {
        let attributes = i16_at(&out, 21) | TIMESTAMP_TYPE_BIT;
        out[21..23].copy_from_slice(&attributes.to_be_bytes());
        out[35..43].copy_from_slice(&now.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Some(out))
}

/// Rewrites the base offset and sets the partition leader epoch to 0 (outside the CRC).
pub(crate) fn assign_offset(batch: &mut [u8], base_offset: u64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&0i32.to_be_bytes());
}

/// Builds a valid uncompressed v2 batch of `records` (key, value) pairs: for tests, benches and
/// the documentation examples, so they need no Kafka client.
pub fn build_batch(
    base_timestamp: i64,
    timestamp_deltas: &[i64],
    values: &[&[u8]],
    producer: Option<(i64, i16, i32)>,
) -> Vec<u8> {
    let mut records = Vec::new();
    for (i, value) in values.iter().enumerate() {
        // A missing delta means "same as the base timestamp".
        let ts_delta = timestamp_deltas.get(i).copied().unwrap_or(0);
        let mut body = Vec::new();
        body.push(0u8); // record attributes
        put_varlong(&mut body, ts_delta);
        put_varlong(&mut body, i as i64);
        put_varlong(&mut body, -1); // null key
        put_varlong(&mut body, value.len() as i64);
        body.extend_from_slice(value);
        put_varlong(&mut body, 0); // no headers
        put_varlong(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let max_ts = (0..values.len())
        .map(|i| timestamp_deltas.get(i).copied().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let (pid, epoch, seq) = producer.unwrap_or((-1, -1, -1));
    let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    let batch_len = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + records.len()) as i32;
    b.extend_from_slice(&batch_len.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&((values.len() as i32) - 1).to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&(base_timestamp + max_ts).to_be_bytes());
    b.extend_from_slice(&pid.to_be_bytes());
    b.extend_from_slice(&epoch.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&(values.len() as i32).to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A record for [`build_keyed_batch`]: key and value, `None` for null.
pub type KeyedRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds a valid v2 batch of keyed records (`None` is a null key or a null value, a value of
/// `None` making the record a tombstone), its records compressed with `compression`: for tests
/// and benches of compacted logs.
///
/// ```
/// use herald_storage::build_keyed_batch;
/// let batch = build_keyed_batch(1_700_000_000_000, &[(Some(b"k"), Some(b"v")), (Some(b"k"), None)], None);
/// assert!(batch.len() > 61);
/// ```
pub fn build_keyed_batch(
    base_timestamp: i64,
    records: &[KeyedRecord<'_>],
    compression: Option<crate::Compression>,
) -> Vec<u8> {
    let mut body_all = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut body = Vec::new();
        body.push(0u8);
        put_varlong(&mut body, 0);
        put_varlong(&mut body, i as i64);
        for field in [key, value] {
            match field {
                Some(bytes) => {
                    put_varlong(&mut body, bytes.len() as i64);
                    body.extend_from_slice(bytes);
                }
                None => put_varlong(&mut body, -1),
            }
        }
        put_varlong(&mut body, 0);
        put_varlong(&mut body_all, body.len() as i64);
        body_all.extend_from_slice(&body);
    }
    let codec = compression.map_or(0, crate::Compression::codec);
    // Compressing bytes in memory cannot fail for the codecs Kafka defines.
    let payload = crate::records::compress(codec, &body_all).unwrap_or(body_all);
    let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + payload.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    let batch_len = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + payload.len()) as i32;
    b.extend_from_slice(&batch_len.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&codec.to_be_bytes());
    b.extend_from_slice(&((records.len() as i32) - 1).to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&(records.len() as i32).to_be_bytes());
    b.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Builds the control batch that ends a transaction on one partition (Kafka's transaction
/// marker): one record whose key is (version 0, type 0 abort or 1 commit) and whose value is
/// (version 0, coordinator epoch), in a batch with the transactional and control bits set and
/// no sequence, so the log's idempotence checks pass it by.
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&i16::from(commit).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut body = Vec::new();
    body.push(0u8); // record attributes
    put_varlong(&mut body, 0); // timestamp delta
    put_varlong(&mut body, 0); // offset delta
    put_varlong(&mut body, key.len() as i64);
    body.extend_from_slice(&key);
    put_varlong(&mut body, value.len() as i64);
    body.extend_from_slice(&value);
    put_varlong(&mut body, 0); // no headers
    let mut records = Vec::new();
    put_varlong(&mut records, body.len() as i64);
    records.extend_from_slice(&body);
    let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    let batch_len = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + records.len()) as i32;
    b.extend_from_slice(&batch_len.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    b.extend_from_slice(&(TRANSACTIONAL_BIT | CONTROL_BIT).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // no sequence
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// `batch` with its records replaced by `records` (uncompressed, `count` of them), compressed
/// with the batch's own codec; base offset, last offset delta, timestamps and producer fields
/// are kept, so offsets keep their gaps and the batch keeps its place. CRC computed again.
pub(crate) fn with_records(
    batch: &[u8],
    h: &BatchHeader,
    records: &[u8],
    count: i32,
) -> std::io::Result<Vec<u8>> {
    let body = crate::records::compress(h.attributes & COMPRESSION_MASK, records)?;
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    out.extend_from_slice(&body);
    let length = i32::try_from(out.len() - LOG_OVERHEAD_BYTES).map_err(std::io::Error::other)?;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// `batch` without its records: the header alone, records count 0, uncompressed (an empty
/// record set needs no codec), CRC computed again. The cleaner keeps this in place of a
/// producer's last batch when every record of it goes, so the producer's sequence numbers
/// and epoch can still be rebuilt from the log (Kafka keeps such empty batches too).
pub(crate) fn emptied(batch: &[u8], h: &BatchHeader) -> Vec<u8> {
    let mut out = batch[..BATCH_HEADER_BYTES].to_vec();
    let length = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = h.attributes & !COMPRESSION_MASK;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    out[57..61].copy_from_slice(&0i32.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// What a transaction marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    Abort,
    Commit,
}

/// The marker a control batch holds, from its record's key (version i16, type i16: 0 abort,
/// 1 commit); `None` for a batch that is not a transaction marker (not a control batch, an
/// undecodable one, or another control type).
pub(crate) fn marker(batch: &[u8], h: &BatchHeader) -> Option<Marker> {
    if h.attributes & CONTROL_BIT == 0 || h.records_count < 1 {
        return None;
    }
    let records = crate::records::uncompressed_records(batch, h).ok()?;
    let first = crate::records::parse_records(&records, 1).ok()?;
    let (start, end) = first.first()?.key?;
    match records.get(start..end)? {
        [_, _, 0, 0] => Some(Marker::Abort),
        [_, _, 0, 1] => Some(Marker::Commit),
        _ => None,
    }
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batch_validates_and_keeps_crc_after_offset_rewrite() {
        let mut b = build_batch(1000, &[0, 5], &[b"a", b"bc"], Some((7, 1, 3)));
        let h = check_batch(&b, 1 << 20).unwrap();
        assert_eq!(h.records_count, 2);
        assert_eq!(h.max_timestamp, 1005);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 1, 3)
        );
        assign_offset(&mut b, 42);
        let h = check_batch(&b, 1 << 20).unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.last_offset(), 43);
    }

    #[test]
    fn control_batch_validates_with_its_bits_and_no_sequence() {
        let b = build_control_batch(9, 3, true, 0, 1_000);
        let h = check_batch(&b, 1 << 20).unwrap();
        assert_eq!(h.attributes, TRANSACTIONAL_BIT | CONTROL_BIT);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (9, 3, -1)
        );
        assert_eq!(h.records_count, 1);
        assert!(!crate::producer::is_idempotent(&h));
        // The record's key says commit (type 1) after its 8 bytes of framing.
        assert_ne!(b, build_control_batch(9, 3, false, 0, 1_000));
    }

    #[test]
    fn markers_are_read_from_the_control_record_key() {
        for (commit, want) in [(true, Marker::Commit), (false, Marker::Abort)] {
            let b = build_control_batch(9, 3, commit, 0, 1_000);
            let h = check_batch(&b, 1 << 20).unwrap();
            assert_eq!(marker(&b, &h), Some(want));
        }
        let data = build_batch(1, &[0], &[b"x"], None);
        let h = check_batch(&data, 1 << 20).unwrap();
        assert_eq!(marker(&data, &h), None);
    }

    #[test]
    fn an_emptied_batch_keeps_its_header_and_passes_only_the_cleaned_check() {
        let mut b = build_batch(1000, &[0, 5, 9], &[b"a", b"bc", b"d"], Some((7, 1, 3)));
        assign_offset(&mut b, 42);
        let h = check_batch(&b, 1 << 20).unwrap();
        let e = emptied(&b, &h);
        assert_eq!(e.len(), BATCH_HEADER_BYTES);
        assert!(matches!(
            check_batch(&e, 1 << 20),
            Err(BatchFault::BadRecordCount)
        ));
        let eh = check_cleaned_batch(&e, 1 << 20).unwrap();
        assert_eq!(eh.records_count, 0);
        assert_eq!(
            (
                eh.base_offset,
                eh.last_offset(),
                eh.base_sequence,
                eh.producer_id
            ),
            (42, 44, 3, 7)
        );
        // More records than the offsets cover is damage even for a cleaned batch.
        let mut over = b.clone();
        over[57..61].copy_from_slice(&4i32.to_be_bytes());
        let crc = crc32c::crc32c(&over[CRC_START..]);
        over[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(check_cleaned_batch(&over, 1 << 20).is_err());
    }

    #[test]
    fn every_single_bit_flip_in_the_crc_range_is_caught() {
        let b = build_batch(1, &[0], &[b"hello"], None);
        for byte in 16..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[byte] ^= 1 << bit;
                assert!(check_batch(&c, 1 << 20).is_err(), "byte {byte} bit {bit}");
            }
        }
    }
}
