//! Appending, reading, reopening and the validation of input batches.

use std::path::Path;

use herald_storage::{AppendError, FlushPolicy, LogConfig, PartitionLog, ReadError, SimFs};

use crate::support::{batch, pbatch, small, split, stored};

#[test]
fn appends_get_consecutive_offsets_and_read_back_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let a = batch(0, 3, 100);
    let b = batch(1, 2, 200);
    let ia = log.append(&a).unwrap();
    let ib = log.append(&b).unwrap();
    assert_eq!((ia.base_offset, ia.last_offset), (0, 2));
    assert_eq!((ib.base_offset, ib.last_offset), (3, 4));
    log.sync_to(5).unwrap();
    assert_eq!(log.offsets().durable_end, 5);
    let r = log.read(0, 1 << 20, true).unwrap();
    assert_eq!(
        split(&r.batches),
        vec![(0, stored(&a, 0)), (3, stored(&b, 3))]
    );
    // Reading from inside a batch starts with that whole batch.
    let r = log.read(4, 1 << 20, true).unwrap();
    assert_eq!(split(&r.batches), vec![(3, stored(&b, 3))]);
    assert_eq!(r.high_watermark, 5);
    // At the high watermark: empty; beyond: out of range.
    assert!(log.read(5, 100, true).unwrap().batches.is_empty());
    assert!(matches!(
        log.read(6, 100, true),
        Err(ReadError::OffsetOutOfRange {
            log_start: 0,
            high_watermark: 5
        })
    ));
}

#[test]
fn max_bytes_returns_whole_batches_and_at_least_one_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let a = batch(0, 1, 1);
    let b = batch(1, 1, 1);
    log.append(&a).unwrap();
    log.append(&b).unwrap();
    let r = log.read(0, a.len() + 10, false).unwrap();
    assert_eq!(split(&r.batches).len(), 1);
    let r = log.read(0, 10, false).unwrap();
    assert!(r.batches.is_empty());
    let r = log.read(0, 10, true).unwrap();
    assert_eq!(split(&r.batches), vec![(0, stored(&a, 0))]);
}

#[test]
fn reopen_keeps_everything_and_continues_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for round in 0..3u64 {
        let log = PartitionLog::open(dir.path(), small(2048)).unwrap();
        assert_eq!(log.offsets().high_watermark, round * 20);
        for i in 0..10 {
            let b = batch(round * 10 + i, 2, 1000);
            let info = log.append(&b).unwrap();
            expected.push((info.base_offset, stored(&b, info.base_offset)));
        }
        if round == 1 {
            log.close().unwrap();
        }
    }
    let log = PartitionLog::open(dir.path(), small(2048)).unwrap();
    let mut got = Vec::new();
    let mut next = 0;
    while next < log.offsets().high_watermark {
        let r = log.read(next, 1 << 20, true).unwrap();
        let batches = split(&r.batches);
        next = batches.last().map(|(b, _)| b + 2).unwrap();
        got.extend(batches);
    }
    assert_eq!(got, expected);
}

#[test]
fn invalid_batches_are_rejected_before_anything_is_written() {
    let fs = SimFs::default();
    let log = PartitionLog::open_with(Path::new("/p"), LogConfig::default(), fs.env()).unwrap();
    let good = batch(0, 1, 1);
    let mut bad_crc = batch(1, 1, 1);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    let mut input = good.clone();
    input.extend_from_slice(&bad_crc);
    assert!(matches!(
        log.append(&input),
        Err(AppendError::CorruptBatch { position, .. }) if position == good.len()
    ));
    let mut bad_magic = batch(2, 1, 1);
    bad_magic[16] = 1;
    assert!(matches!(
        log.append(&bad_magic),
        Err(AppendError::CorruptBatch { .. })
    ));
    assert!(matches!(
        log.append(&good[..good.len() - 1]),
        Err(AppendError::CorruptBatch { .. })
    ));
    assert!(matches!(
        log.append(&[]),
        Err(AppendError::CorruptBatch { .. })
    ));
    assert_eq!(log.offsets().high_watermark, 0);
    assert_eq!(log.size_bytes(), 0);

    log.set_config(LogConfig {
        batch_bytes_max: 100,
        ..LogConfig::default()
    })
    .unwrap();
    let big = batch(3, 10, 1);
    assert!(matches!(
        log.append(&big),
        Err(AppendError::BatchTooLarge {
            batch_bytes_max: 100,
            ..
        })
    ));
}

#[test]
fn idempotent_retries_are_recognised_even_after_reopen() {
    let fs = SimFs::default();
    let dir = Path::new("/p");
    let log = PartitionLog::open_with(dir, LogConfig::default(), fs.env()).unwrap();
    let first = log.append(&pbatch(7, 0, 0, 3)).unwrap();
    let second = log.append(&pbatch(7, 0, 3, 2)).unwrap();
    assert_eq!((second.base_offset, second.last_offset), (3, 4));
    let retry = log.append(&pbatch(7, 0, 0, 3)).unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (first.base_offset, first.last_offset)
    );
    assert!(matches!(
        log.append(&pbatch(7, 0, 9, 1)),
        Err(AppendError::OutOfOrderSequence {
            expected_sequence: 5,
            sequence: 9,
            ..
        })
    ));
    log.flush().unwrap();
    // Crash without a clean close: the state is rebuilt from the log tail.
    let image = fs.crash_image();
    std::mem::forget(log);
    let log = PartitionLog::open_with(dir, LogConfig::default(), image.env()).unwrap();
    let retry = log.append(&pbatch(7, 0, 3, 2)).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, 3);
    // A new epoch must start at sequence 0, and fences the old one.
    assert!(matches!(
        log.append(&pbatch(7, 1, 5, 1)),
        Err(AppendError::OutOfOrderSequence { .. })
    ));
    log.append(&pbatch(7, 1, 0, 1)).unwrap();
    assert!(matches!(
        log.append(&pbatch(7, 0, 5, 1)),
        Err(AppendError::ProducerFenced {
            current_epoch: 1,
            ..
        })
    ));
    assert_eq!(log.offsets().high_watermark, 6);
    // Clean close: the state comes from the checkpoint snapshot.
    log.close().unwrap();
    let log = PartitionLog::open_with(dir, LogConfig::default(), image.env()).unwrap();
    assert!(log.append(&pbatch(7, 1, 0, 1)).unwrap().duplicate);
}

#[test]
fn one_fsync_covers_every_append_before_it() {
    let fs = SimFs::default();
    let log = PartitionLog::open_with(Path::new("/p"), LogConfig::default(), fs.env()).unwrap();
    for i in 0..5 {
        log.append(&batch(i, 2, 1)).unwrap();
    }
    log.sync_to(2).unwrap();
    // Later callers whose records that fsync covered return without one of their own.
    log.sync_to(10).unwrap();
    log.sync_to(4).unwrap();
    let stats = log.stats();
    assert_eq!((stats.appends, stats.group_commits), (5, 1));
    assert_eq!(log.offsets().durable_end, 10);
    log.append(&batch(5, 1, 1)).unwrap();
    log.sync_to(11).unwrap();
    assert_eq!(log.stats().group_commits, 2);
}

/// The records part of a stored batch and its compression codec.
fn records_and_codec(stored: &[u8]) -> (Vec<u8>, i16) {
    let attributes = i16::from_be_bytes([stored[21], stored[22]]);
    (stored[61..].to_vec(), attributes & 0x07)
}

fn append_and_read(config: LogConfig, input: &[u8]) -> Vec<u8> {
    let log = PartitionLog::open_with(Path::new("/p"), config, SimFs::default().env()).unwrap();
    log.append(input).unwrap();
    let read = log.read(0, 1 << 20, true).unwrap();
    let mut batches = split(&read.batches);
    assert_eq!(batches.len(), 1);
    batches.remove(0).1
}

#[test]
fn a_configured_codec_recompresses_batches_and_keeps_their_records() {
    use herald_storage::Compression;
    let original = batch(7, 50, 1_700_000_000_000);
    let (records, codec) = records_and_codec(&original);
    assert_eq!(codec, 0);
    for (compression, number) in [
        (Compression::Gzip, 1),
        (Compression::Snappy, 2),
        (Compression::Lz4, 3),
        (Compression::Zstd, 4),
    ] {
        let compressed = append_and_read(
            LogConfig {
                compression: Some(compression),
                ..LogConfig::default()
            },
            &original,
        );
        assert_eq!(records_and_codec(&compressed).1, number, "{compression:?}");
        // The rewritten batch passes validation (CRC included) and decompresses back to the
        // same records when stored uncompressed.
        let back = append_and_read(
            LogConfig {
                compression: Some(Compression::None),
                ..LogConfig::default()
            },
            &compressed,
        );
        assert_eq!(
            records_and_codec(&back),
            (records.clone(), 0),
            "{compression:?}"
        );
    }
}

#[test]
fn log_append_time_stamps_batches_with_the_log_clock() {
    use herald_storage::{ManualClock, TimestampType};
    let clock = std::sync::Arc::new(ManualClock::new(1_800_000_000_000));
    let fs = SimFs::with_clock(clock);
    let config = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let log = PartitionLog::open_with(Path::new("/p"), config, fs.env()).unwrap();
    log.append(&batch(0, 3, 5)).unwrap();
    let read = log.read(0, 1 << 20, true).unwrap();
    let stored = &split(&read.batches)[0].1;
    let attributes = i16::from_be_bytes([stored[21], stored[22]]);
    assert_ne!(attributes & 0x08, 0, "marked log-append-time");
    let max = i64::from_be_bytes(stored[35..43].try_into().unwrap());
    assert_eq!(max, 1_800_000_000_000);
    assert_eq!(
        log.offset_for_timestamp(1_800_000_000_000).unwrap(),
        Some((0, 1_800_000_000_000))
    );
}

#[test]
fn batches_dated_outside_the_limits_are_refused_whole() {
    use herald_storage::ManualClock;
    let now = 1_800_000_000_000;
    let fs = SimFs::with_clock(std::sync::Arc::new(ManualClock::new(now)));
    let config = LogConfig {
        timestamp_before_max_ms: Some(1_000),
        timestamp_after_max_ms: Some(2_000),
        ..LogConfig::default()
    };
    let log = PartitionLog::open_with(Path::new("/p"), config, fs.env()).unwrap();
    let mut input = batch(0, 1, now);
    input.extend_from_slice(&batch(1, 1, now - 1_001));
    assert!(matches!(
        log.append(&input),
        Err(AppendError::InvalidTimestamp { position, direction: "before", limit_ms: 1_000, .. })
            if position > 0
    ));
    assert!(matches!(
        log.append(&batch(2, 1, now + 2_001)),
        Err(AppendError::InvalidTimestamp {
            direction: "after",
            limit_ms: 2_000,
            ..
        })
    ));
    assert_eq!(log.offsets().high_watermark, 0);
    log.append(&batch(3, 1, now - 1_000)).unwrap();
    log.append(&batch(4, 1, now + 2_000)).unwrap();
    // No timestamp at all is never refused.
    log.append(&batch(5, 1, -1)).unwrap();
    assert_eq!(log.offsets().high_watermark, 3);
}

#[test]
fn a_retired_log_leaves_its_directory_alone() {
    let fs = SimFs::default();
    let log = PartitionLog::open_with(Path::new("/p"), small(1024), fs.env()).unwrap();
    log.append(&batch(0, 2, 1_700_000_000_000)).unwrap();
    let before = fs.paths();
    log.retire();
    assert!(matches!(
        log.append(&batch(1, 2, 1_700_000_000_000)),
        Err(AppendError::Deleted)
    ));
    fs.clock().advance_ms(30 * 24 * 3600 * 1000);
    let out = log.maintain().unwrap();
    assert_eq!(
        (out.rolled, out.segments_deleted, out.checkpointed),
        (false, 0, false)
    );
    // Reads of what was there go on working; dropping it writes no final checkpoint.
    assert_eq!(log.read(0, 1 << 20, true).unwrap().high_watermark, 2);
    drop(log);
    assert_eq!(fs.paths(), before);
}

#[test]
fn readers_see_only_what_is_durable_when_the_log_fsyncs_before_acknowledging() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let a = batch(0, 3, 100);
    let b = batch(1, 2, 200);
    log.append(&a).unwrap();
    let o = log.offsets();
    assert_eq!((o.high_watermark, o.durable_end, o.visible_end), (3, 0, 0));
    // Not durable yet: nothing to read, and the high watermark says so.
    let r = log.read_visible(0, 1 << 20, true).unwrap();
    assert!(r.batches.is_empty());
    assert_eq!(r.high_watermark, 0);
    log.sync_to(3).unwrap();
    log.append(&b).unwrap();
    // The durable batch is read, the one after it is not, even with room for both.
    let r = log.read_visible(0, 1 << 20, true).unwrap();
    assert_eq!(split(&r.batches), vec![(0, stored(&a, 0))]);
    assert_eq!(r.high_watermark, 3);
    // Between the visible end and the log end: empty, not out of range.
    assert!(log.read_visible(3, 100, true).unwrap().batches.is_empty());
    assert!(matches!(
        log.read_visible(6, 100, true),
        Err(ReadError::OffsetOutOfRange {
            high_watermark: 3,
            ..
        })
    ));
    log.sync_to(5).unwrap();
    assert_eq!(log.offsets().visible_end, 5);
    assert_eq!(
        split(&log.read_visible(3, 1 << 20, true).unwrap().batches).len(),
        1
    );
}

#[test]
fn readers_see_the_log_end_when_the_log_is_flushed_on_an_interval_or_never() {
    for flush in [FlushPolicy::IntervalMs(1_000), FlushPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            flush,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir.path(), config).unwrap();
        let a = batch(0, 3, 100);
        log.append(&a).unwrap();
        assert_eq!(log.offsets().visible_end, 3);
        let r = log.read_visible(0, 1 << 20, true).unwrap();
        assert_eq!(split(&r.batches), vec![(0, stored(&a, 0))]);
        assert_eq!(r.high_watermark, 3);
    }
}
