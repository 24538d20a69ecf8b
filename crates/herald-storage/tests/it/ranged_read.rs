//! Ranged reads (`read_visible_below_ranged`): the batches left in their segment file hold
//! exactly what the copying read returns, under every limit, and stay readable when retention
//! or the cleaner takes the segment away.

use std::path::Path;
use std::sync::Arc;

use herald_storage::{
    CleanupPolicy, Env, FileRange, KeyedRecord, LogConfig, ManualClock, OsFileSystem, PartitionLog,
    RangedBatches, RangedReadOutcome, SimFs, Throttle, build_batch, build_keyed_batch,
};

use crate::support::{small, split};

const T0: i64 = 1_700_000_000_000;

/// A batch of `n` records of `value_bytes` each.
fn sized_batch(n: usize, value_bytes: usize) -> Vec<u8> {
    let value = vec![b'v'; value_bytes];
    let refs: Vec<&[u8]> = (0..n).map(|_| value.as_slice()).collect();
    build_batch(T0, &[], &refs, None)
}

/// The range of a ranged read on real files.
fn range_of(read: &RangedReadOutcome) -> &FileRange {
    match &read.batches {
        RangedBatches::File(range) => range,
        RangedBatches::Bytes(bytes) => {
            assert!(bytes.is_empty(), "real files must give ranges, not bytes");
            panic!("no range")
        }
    }
}

/// The bytes of a ranged read, whichever form they took.
fn bytes_of(read: &RangedReadOutcome) -> Vec<u8> {
    match &read.batches {
        RangedBatches::Bytes(bytes) => bytes.to_vec(),
        RangedBatches::File(range) => range.to_bytes().unwrap().to_vec(),
    }
}

/// Sum of the record counts of concatenated batches.
fn records_in(batches: &[u8]) -> u64 {
    split(batches)
        .iter()
        .map(|(_, b)| u64::from(u32::from_be_bytes(b[57..61].try_into().unwrap())))
        .sum()
}

/// Compares the ranged read with the copying read at `offset` under every limit in `limits`.
fn assert_same_reads(log: &PartitionLog, offset: u64, stable_end: u64, limits: &[usize]) {
    for &max_bytes in limits {
        for at_least_one in [false, true] {
            let copied = log
                .read_visible_below(offset, stable_end, max_bytes, at_least_one)
                .unwrap();
            let ranged = log
                .read_visible_below_ranged(offset, stable_end, max_bytes, at_least_one)
                .unwrap();
            let what = format!(
                "offset {offset}, stable end {stable_end}, max {max_bytes}, at least one {at_least_one}"
            );
            assert_eq!(bytes_of(&ranged), copied.batches.to_vec(), "{what}");
            assert_eq!(ranged.high_watermark, copied.high_watermark, "{what}");
            assert_eq!(ranged.log_start, copied.log_start, "{what}");
            if let RangedBatches::File(range) = &ranged.batches {
                assert_eq!(range.records(), records_in(&copied.batches), "{what}");
                assert_eq!(range.len(), copied.batches.len() as u64, "{what}");
            }
        }
    }
}

#[test]
fn ranges_hold_exactly_the_batches_the_copying_read_returns() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments, so reads start in every segment and stop at its end; batches from
    // under a header window to larger than one, so the walk reads both ways.
    let log = PartitionLog::open(dir.path(), small(16 * 1024)).unwrap();
    let shapes = [
        (1, 10),
        (3, 40),
        (20, 30),
        (2, 3000),
        (1, 7000),
        (5, 5),
        (8, 900),
    ];
    for round in 0..12 {
        for (n, value_bytes) in shapes {
            log.append(&sized_batch(n + round % 3, value_bytes))
                .unwrap();
        }
    }
    let end = log.offsets().high_watermark;
    log.sync_to(end).unwrap();
    assert!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log"))
            .count()
            > 5,
        "the log spans several segments"
    );
    // Limits cutting between batches, inside the first one, and beyond a segment.
    let limits = [0, 60, 61, 200, 1000, 4096, 5000, 9000, 20_000, 1 << 20];
    for offset in 0..end {
        assert_same_reads(&log, offset, u64::MAX, &limits);
    }
    // A read_committed reader's stable end cuts like the visible end.
    for stable_end in [0, 1, end / 3, end / 2, end - 1] {
        for offset in (0..end).step_by(7) {
            assert_same_reads(&log, offset, stable_end, &[200, 20_000, 1 << 20]);
        }
    }
    // Reading the whole log range by range crosses every segment boundary and yields every
    // record once, in order.
    let mut offset = 0;
    let mut reads = 0;
    while offset < end {
        let read = log
            .read_visible_below_ranged(offset, u64::MAX, 10_000, true)
            .unwrap();
        for (base, batch) in split(&bytes_of(&read)) {
            assert_eq!(base, offset, "batches follow each other");
            offset += u64::from(u32::from_be_bytes(batch[57..61].try_into().unwrap()));
        }
        reads += 1;
    }
    assert_eq!(offset, end);
    assert!(reads > 5);
}

#[test]
fn ranges_stop_at_the_visible_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let a = sized_batch(4, 100);
    log.append(&a).unwrap();
    log.sync_to(4).unwrap();
    // Appended but not fsynced: not visible on a log flushed before acks.
    log.append(&sized_batch(3, 100)).unwrap();
    assert_eq!(log.offsets().visible_end, 4);
    let read = log
        .read_visible_below_ranged(0, u64::MAX, 1 << 20, true)
        .unwrap();
    assert_eq!(read.high_watermark, 4);
    assert_eq!(range_of(&read).records(), 4);
    assert_eq!(split(&bytes_of(&read)).len(), 1);
    let beyond = log
        .read_visible_below_ranged(5, u64::MAX, 1 << 20, true)
        .unwrap();
    assert!(beyond.batches.is_empty());
    assert_same_reads(&log, 0, u64::MAX, &[0, 100, 1 << 20]);
    log.sync_to(7).unwrap();
    let read = log
        .read_visible_below_ranged(0, u64::MAX, 1 << 20, true)
        .unwrap();
    assert_eq!((read.high_watermark, range_of(&read).records()), (7, 7));
    assert_same_reads(&log, 5, u64::MAX, &[0, 100, 1 << 20]);
}

#[test]
fn a_range_stays_readable_after_retention_deletes_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), small(4096)).unwrap();
    for _ in 0..30 {
        log.append(&sized_batch(2, 400)).unwrap();
    }
    log.flush().unwrap();
    let read = log
        .read_visible_below_ranged(0, u64::MAX, 1 << 20, true)
        .unwrap();
    let range = range_of(&read).clone();
    let expected = log.read_visible(0, 1 << 20, true).unwrap().batches;
    assert_eq!(range.position(), 0);
    // DeleteRecords past the first segments deletes their files.
    let first = dir.path().join(format!("{:020}.log", 0));
    assert!(first.exists());
    log.delete_records_before(30).unwrap();
    assert!(!first.exists(), "the segment file is gone");
    assert!(log.read_visible(0, 1 << 20, true).is_err());
    // The range still reads the bytes, through its handle and through its descriptor.
    assert_eq!(range.to_bytes().unwrap(), expected);
    let fd = range.raw_fd().expect("a real file has a descriptor");
    let mut buf = vec![0u8; expected.len()];
    // SAFETY: `buf` is valid for `buf.len()` bytes and `range` keeps `fd` open.
    let n = unsafe {
        libc::pread(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            range.position() as libc::off_t,
        )
    };
    assert_eq!(usize::try_from(n).unwrap(), expected.len());
    assert_eq!(buf, expected.to_vec());
}

#[test]
fn a_range_stays_readable_after_the_cleaner_replaces_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let env = Env::new(Arc::new(OsFileSystem), clock.clone());
    let config = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: 1,
        ..small(2048)
    };
    let log = PartitionLog::open_with(dir.path(), config, env).unwrap();
    let value = vec![b'x'; 100];
    for round in 0..40u32 {
        let keys: Vec<String> = (0..4).map(|k| format!("k{k}")).collect();
        let records: Vec<KeyedRecord<'_>> = keys
            .iter()
            .map(|k| (Some(k.as_bytes()), Some(value.as_slice())))
            .collect();
        log.append(&build_keyed_batch(T0 + i64::from(round), &records, None))
            .unwrap();
    }
    log.flush().unwrap();
    let read = log
        .read_visible_below_ranged(0, u64::MAX, 1 << 20, true)
        .unwrap();
    let range = range_of(&read).clone();
    let before = log.read_visible(0, 1 << 20, true).unwrap().batches;
    clock.advance_ms(10);
    let out = log.clean(1 << 20, &Throttle::new(None)).unwrap();
    assert!(out.swapped, "the cleaner replaced the segments");
    let after = log.read_visible(0, 1 << 20, true).unwrap().batches;
    assert_ne!(after, before, "the log now holds the cleaned segment");
    assert_eq!(
        range.to_bytes().unwrap(),
        before,
        "the range reads the old one"
    );
}

#[test]
fn the_simulated_file_system_reads_into_memory() {
    let fs = SimFs::default();
    let log = PartitionLog::open_with(Path::new("/p"), LogConfig::default(), fs.env()).unwrap();
    log.append(&sized_batch(3, 10)).unwrap();
    log.flush().unwrap();
    let read = log
        .read_visible_below_ranged(0, u64::MAX, 1 << 20, true)
        .unwrap();
    let RangedBatches::Bytes(bytes) = &read.batches else {
        panic!("a simulated file has no descriptor to send from");
    };
    assert_eq!(bytes, &log.read_visible(0, 1 << 20, true).unwrap().batches);
    assert_same_reads(&log, 0, u64::MAX, &[0, 10, 1 << 20]);
}
