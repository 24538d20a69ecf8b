//! Segment rolls, retention, DeleteRecords, interval flushes and checkpoints, with an injected clock.

use std::path::Path;
use std::sync::Arc;

use herald_storage::{
    DeleteRecordsError, FlushPolicy, LogConfig, ManualClock, PartitionLog, ReadError, SimFs,
};

use crate::support::{batch, small, split};

const T0: i64 = 1_700_000_000_000;
const DIR: &str = "/part";

fn setup(config: LogConfig) -> (SimFs, Arc<ManualClock>, PartitionLog) {
    let clock = Arc::new(ManualClock::new(T0));
    let fs = SimFs::with_clock(clock.clone());
    let log = PartitionLog::open_with(Path::new(DIR), config, fs.env()).unwrap();
    (fs, clock, log)
}

fn segments(fs: &SimFs) -> Vec<u64> {
    fs.paths()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn segments_roll_by_size_with_base_offset_names() {
    let (fs, _clock, log) = setup(small(1024));
    let b = batch(0, 2, T0);
    let per_segment = 1024 / b.len() as u64;
    for _ in 0..per_segment * 3 {
        log.append(&b).unwrap();
    }
    let bases = segments(&fs);
    assert_eq!(bases.len(), 3);
    assert_eq!(bases[0], 0);
    assert_eq!(bases[1], per_segment * 2);
    assert!(
        fs.paths()
            .iter()
            .any(|p| p.ends_with("00000000000000000000.index"))
    );
    assert!(
        fs.paths()
            .iter()
            .any(|p| p.ends_with("00000000000000000000.timeindex"))
    );
    // Reads cross segment boundaries by offset.
    let r = log.read(per_segment * 2, 1 << 20, true).unwrap();
    assert_eq!(split(&r.batches)[0].0, per_segment * 2);
}

#[test]
fn segments_roll_by_age_on_append_and_in_maintain() {
    let config = LogConfig {
        segment_ms: 1_000,
        retention_ms: None,
        ..LogConfig::default()
    };
    let (fs, clock, log) = setup(config);
    log.append(&batch(0, 1, T0)).unwrap();
    clock.advance_ms(999);
    log.append(&batch(1, 1, T0)).unwrap();
    assert_eq!(segments(&fs), vec![0]);
    clock.advance_ms(1);
    log.append(&batch(2, 1, T0)).unwrap();
    assert_eq!(segments(&fs), vec![0, 2]);
    // An idle segment is rolled by maintenance once old enough.
    assert!(!log.maintain().unwrap().rolled);
    clock.advance_ms(1_000);
    assert!(log.maintain().unwrap().rolled);
    assert_eq!(segments(&fs), vec![0, 2, 3]);
    // An empty active segment is never rolled.
    clock.advance_ms(5_000);
    assert!(!log.maintain().unwrap().rolled);
}

#[test]
fn retention_by_time_deletes_whole_closed_segments_by_newest_timestamp() {
    let config = LogConfig {
        retention_ms: Some(10_000),
        ..small(1024)
    };
    let (fs, clock, log) = setup(config);
    // Segment 1 holds old records, later ones newer records.
    let old = batch(0, 2, T0);
    let per_segment = 1024 / old.len() as u64;
    for _ in 0..per_segment {
        log.append(&old).unwrap();
    }
    for _ in 0..per_segment {
        log.append(&batch(1, 2, T0 + 5_000)).unwrap();
    }
    log.append(&batch(2, 2, T0 + 5_000)).unwrap();
    assert_eq!(segments(&fs).len(), 3);
    clock.set_ms(T0 + 10_000);
    assert_eq!(log.maintain().unwrap().segments_deleted, 0);
    clock.set_ms(T0 + 10_001);
    let out = log.maintain().unwrap();
    assert_eq!(out.segments_deleted, 1);
    assert_eq!(segments(&fs).len(), 2);
    let start = log.offsets().log_start;
    assert_eq!(start, per_segment * 2);
    assert!(matches!(
        log.read(0, 100, true),
        Err(ReadError::OffsetOutOfRange { log_start, .. }) if log_start == start
    ));
    // Once even the active segment is expired it is rolled and deleted too.
    clock.set_ms(T0 + 15_001);
    let out = log.maintain().unwrap();
    assert!(out.rolled);
    assert_eq!(out.segments_deleted, 2);
    let offsets = log.offsets();
    assert_eq!(offsets.log_start, offsets.high_watermark);
    log.append(&batch(3, 1, T0 + 15_001)).unwrap();
}

#[test]
fn retention_by_size_keeps_the_newest_segments_within_the_limit() {
    let config = LogConfig {
        retention_ms: None,
        retention_bytes: Some(2048),
        ..small(1024)
    };
    let (fs, _clock, log) = setup(config);
    let b = batch(0, 2, T0);
    for _ in 0..(4096 / b.len()) {
        log.append(&b).unwrap();
    }
    let before = segments(&fs).len();
    let out = log.maintain().unwrap();
    assert!(out.segments_deleted > 0);
    assert_eq!(segments(&fs).len(), before - out.segments_deleted);
    assert!(log.size_bytes() < 2048 + 1024);
    assert!(log.size_bytes() >= 2048 - 1024);
}

#[test]
fn delete_records_moves_the_log_start_durably_and_frees_segments() {
    let (fs, _clock, log) = setup(small(1024));
    let b = batch(0, 2, T0);
    for _ in 0..40 {
        log.append(&b).unwrap();
    }
    log.flush().unwrap();
    assert!(matches!(
        log.delete_records_before(81),
        Err(DeleteRecordsError::OffsetOutOfRange {
            high_watermark: 80,
            ..
        })
    ));
    assert_eq!(log.delete_records_before(31).unwrap(), 31);
    assert_eq!(log.delete_records_before(5).unwrap(), 31);
    assert!(segments(&fs)[0] <= 31);
    assert!(matches!(
        log.read(30, 100, true),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    // Reading at the log start returns the batch holding it.
    let r = log.read(31, 1 << 20, true).unwrap();
    assert_eq!(split(&r.batches)[0].0, 30);
    // Survives a crash right after returning.
    let image = fs.crash_image();
    std::mem::forget(log);
    let log = PartitionLog::open_with(Path::new(DIR), small(1024), image.env()).unwrap();
    assert_eq!(log.offsets().log_start, 31);
    // Deleting everything rolls the active segment away; appends continue at the end.
    assert_eq!(log.delete_records_before(80).unwrap(), 80);
    assert_eq!(segments(&image), vec![80]);
    assert_eq!(log.append(&b).unwrap().base_offset, 80);
}

#[test]
fn interval_flush_happens_in_maintain_when_due() {
    let config = LogConfig {
        flush: FlushPolicy::IntervalMs(100),
        ..LogConfig::default()
    };
    let (_fs, clock, log) = setup(config);
    log.append(&batch(0, 1, T0)).unwrap();
    log.sync_to(1).unwrap(); // returns at once under IntervalMs
    assert_eq!(log.offsets().durable_end, 0);
    clock.advance_ms(99);
    assert!(!log.maintain().unwrap().flushed);
    clock.advance_ms(1);
    assert!(log.maintain().unwrap().flushed);
    assert_eq!(log.offsets().durable_end, 1);
}

#[test]
fn maintain_writes_checkpoints_so_reopen_scans_only_the_tail() {
    let config = LogConfig {
        checkpoint_interval_ms: 1_000,
        ..LogConfig::default()
    };
    let (fs, clock, log) = setup(config.clone());
    for i in 0..10 {
        log.append(&batch(i, 1, T0)).unwrap();
    }
    assert!(!log.maintain().unwrap().checkpointed);
    clock.advance_ms(1_000);
    assert!(log.maintain().unwrap().checkpointed);
    assert_eq!(log.offsets().durable_end, 10);
    assert!(!log.maintain().unwrap().checkpointed); // nothing new
    // Damage inside the checkpointed region is not re-read on open (it is trusted)...
    let image = fs.crash_image();
    std::mem::forget(log);
    let seg = image
        .paths()
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let mut bytes = image.contents(&seg).unwrap();
    bytes[100] ^= 0xff;
    image.write_file(&seg, &bytes);
    let log = PartitionLog::open_with(Path::new(DIR), config, image.env()).unwrap();
    // ...which is how we know reopen did not read it.
    assert_eq!(log.offsets().high_watermark, 10);
}

#[test]
fn maintain_checkpoints_a_long_unchecked_tail_before_the_interval() {
    // With a long interval, only the size of the unchecked tail can make a checkpoint due.
    let config = LogConfig {
        checkpoint_interval_ms: 3_600_000,
        ..LogConfig::default()
    };
    let (_fs, _clock, log) = setup(config);
    let value = vec![7u8; 512 * 1024];
    let big = herald_storage::build_batch(T0, &[], &[value.as_slice()], None);
    let mut appended = 0u64;
    while appended + (big.len() as u64) < herald_storage::CHECKPOINT_LAG_BYTES_MAX {
        log.append(&big).unwrap();
        appended += big.len() as u64;
    }
    assert!(!log.maintain().unwrap().checkpointed, "below the lag limit");
    log.append(&big).unwrap();
    let outcome = log.maintain().unwrap();
    assert!(outcome.checkpointed, "at the lag limit");
    assert!(!log.maintain().unwrap().checkpointed, "nothing new since");
}

/// A batch as librdkafka writes it for records produced without a timestamp: every record
/// carries Kafka's -1, but the header's `maxTimestamp` is 0.
fn batch_without_timestamps(tag: u64, n: usize) -> Vec<u8> {
    let mut b = batch(tag, n, -1);
    b[35..43].copy_from_slice(&0i64.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn batches_without_timestamps_age_by_their_append_time_not_by_the_epoch() {
    let config = LogConfig {
        retention_ms: Some(10_000),
        ..small(1024)
    };
    let (fs, clock, log) = setup(config.clone());
    let b = batch_without_timestamps(0, 2);
    let per_segment = 1024 / b.len() as u64;
    for _ in 0..per_segment + 1 {
        log.append(&b).unwrap();
    }
    assert_eq!(segments(&fs).len(), 2);
    // A header max of 0 would make these records 56 years old: nothing may go now.
    assert_eq!(log.maintain().unwrap().segments_deleted, 0);
    assert_eq!(log.offsets().log_start, 0);
    // No time lookup finds records that have no timestamp.
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);

    // Across a restart the segments keep the age of their last write, not of the reopen.
    clock.set_ms(T0 + 6_000);
    let image = fs.process_crash_image();
    std::mem::forget(log);
    let log = PartitionLog::open_with(Path::new(DIR), config, image.env()).unwrap();
    assert_eq!(log.maintain().unwrap().segments_deleted, 0);
    image.clock().set_ms(T0 + 10_001);
    assert_eq!(log.maintain().unwrap().segments_deleted, 2);
    let offsets = log.offsets();
    assert_eq!(offsets.log_start, offsets.high_watermark);
    assert_eq!(offsets.log_start, (per_segment + 1) * 2);
}

#[test]
fn timestamps_far_in_the_past_expire_at_once_and_far_in_the_future_never() {
    let config = LogConfig {
        retention_ms: Some(10_000),
        ..small(1024)
    };
    let year_ms = 365 * 24 * 3600 * 1000;
    // Kafka's rule: a segment's age is its newest record's timestamp, whatever it says.
    let (fs, _clock, log) = setup(config.clone());
    let past = batch(0, 2, T0 - year_ms);
    let per_segment = 1024 / past.len() as u64;
    for _ in 0..per_segment + 1 {
        log.append(&past).unwrap();
    }
    assert_eq!(segments(&fs).len(), 2);
    let out = log.maintain().unwrap();
    assert_eq!(out.segments_deleted, 2);
    assert_eq!(log.offsets().log_start, (per_segment + 1) * 2);

    let (fs, clock, log) = setup(config);
    let future = batch(0, 2, T0 + year_ms);
    for _ in 0..per_segment + 1 {
        log.append(&future).unwrap();
    }
    clock.set_ms(T0 + 100 * 10_000);
    assert_eq!(log.maintain().unwrap().segments_deleted, 0);
    assert_eq!(segments(&fs).len(), 2);
    assert_eq!(log.offsets().log_start, 0);
}
