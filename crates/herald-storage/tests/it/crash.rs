//! Crash tests through the simulated file system: power loss dropping the unsynced tail, a torn
//! last write cut at every byte, flipped bits in the tail, and fsync failures.

use std::path::{Path, PathBuf};

use herald_storage::{AppendError, FlushError, LogConfig, PartitionLog, SimFs};

use crate::support::{batch, small, split, stored};

const DIR: &str = "/part";

fn dir() -> &'static Path {
    Path::new(DIR)
}

/// Every batch of the log, read from the start.
fn read_all(log: &PartitionLog) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = log.offsets().log_start;
    let hw = log.offsets().high_watermark;
    while next < hw {
        let r = log.read(next, 1 << 16, true).unwrap();
        let batches = split(&r.batches);
        assert!(!batches.is_empty());
        for (base, bytes) in batches {
            let records = u32::from_be_bytes(bytes[57..61].try_into().unwrap()) as u64;
            next = base + records;
            out.push((base, bytes));
        }
    }
    out
}

/// After reopening: durable batches present and identical, nothing unknown, appends continue.
fn check_recovered(log: &PartitionLog, appended: &[(u64, Vec<u8>)], durable_end: u64) {
    let got = read_all(log);
    let hw = log.offsets().high_watermark;
    assert!(
        hw >= durable_end,
        "lost durable records: hw {hw} < {durable_end}"
    );
    let expected: Vec<_> = appended.iter().filter(|(b, _)| *b < hw).cloned().collect();
    assert_eq!(got, expected);
    let next = batch(999, 1, 5);
    let info = log.append(&next).unwrap();
    assert_eq!(info.base_offset, hw);
    assert_eq!(
        split(&log.read(hw, 1 << 16, true).unwrap().batches),
        vec![(hw, stored(&next, hw))]
    );
}

fn segment_files(fs: &SimFs) -> Vec<PathBuf> {
    fs.paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect()
}

#[test]
fn power_loss_keeps_exactly_what_was_synced_or_more() {
    for segment_bytes in [1024, 1 << 20] {
        let fs = SimFs::default();
        let log = PartitionLog::open_with(dir(), small(segment_bytes), fs.env()).unwrap();
        let mut appended = Vec::new();
        let mut durable = 0;
        for i in 0..40u64 {
            let b = batch(i, 1 + (i % 3) as usize, 10);
            let info = log.append(&b).unwrap();
            appended.push((info.base_offset, stored(&b, info.base_offset)));
            if i % 7 == 0 {
                log.sync_to(info.last_offset + 1).unwrap();
                durable = info.last_offset + 1;
            }
        }
        assert!(log.offsets().durable_end >= durable);
        let image = fs.crash_image();
        std::mem::forget(log);
        let log = PartitionLog::open_with(dir(), small(segment_bytes), image.env()).unwrap();
        check_recovered(&log, &appended, durable);
    }
}

/// Builds a log with some durable batches and one more, unsynced, batch; returns the file system,
/// the appended batches, the durable end and the path of the segment holding the last batch.
fn log_with_unsynced_tail(checkpoint_at_end: bool) -> (SimFs, Vec<(u64, Vec<u8>)>, u64, PathBuf) {
    let fs = SimFs::default();
    let log = PartitionLog::open_with(dir(), small(1 << 20), fs.env()).unwrap();
    let mut appended = Vec::new();
    for i in 0..4u64 {
        let b = batch(i, 2, 10);
        let info = log.append(&b).unwrap();
        appended.push((info.base_offset, stored(&b, info.base_offset)));
    }
    if checkpoint_at_end {
        // A clean close records the end in the checkpoint: reopen starts scanning there.
        log.close().unwrap();
    } else {
        log.flush().unwrap();
        std::mem::forget(log);
    }
    let log = PartitionLog::open_with(dir(), small(1 << 20), fs.env()).unwrap();
    let durable = log.offsets().high_watermark;
    let b = batch(100, 3, 10);
    let info = log.append(&b).unwrap();
    appended.push((info.base_offset, stored(&b, info.base_offset)));
    std::mem::forget(log);
    let seg = segment_files(&fs).pop().unwrap();
    (fs, appended, durable, seg)
}

/// The segment's bytes (with the zeros preallocated past its end), where the fsynced part ends,
/// and where the last batch, never fsynced, ends.
fn unsynced_tail(fs: &SimFs, seg: &Path, appended: &[(u64, Vec<u8>)]) -> (Vec<u8>, usize, usize) {
    let full = fs.contents(seg).unwrap();
    let synced = fs.durable_len(seg).unwrap() as usize;
    let end = synced + appended.last().unwrap().1.len();
    assert!(full.len() > end, "space is reserved past the last batch");
    assert!(full[end..].iter().all(|b| *b == 0));
    (full, synced, end)
}

#[test]
fn a_torn_last_write_is_cut_at_every_byte_and_recovery_truncates_it() {
    for checkpoint_at_end in [false, true] {
        let (fs, appended, durable, seg) = log_with_unsynced_tail(checkpoint_at_end);
        let (full, synced, end) = unsynced_tail(&fs, &seg, &appended);
        assert!(synced < end);
        // Every cut of the last batch, then the whole file with the space reserved past it.
        for cut in (synced..=end).chain([full.len()]) {
            let image = fs.process_crash_image();
            image.write_file(&seg, &full[..cut]);
            let log = PartitionLog::open_with(dir(), small(1 << 20), image.env()).unwrap();
            let hw = log.offsets().high_watermark;
            if cut >= end {
                assert_eq!(hw, durable + 3, "complete batch lost at cut {cut}");
            } else {
                assert_eq!(hw, durable, "partial batch kept at cut {cut}");
            }
            check_recovered(&log, &appended, durable);
        }
    }
}

#[test]
fn flipped_bits_in_the_tail_drop_the_damaged_batch_and_nothing_before_it() {
    for checkpoint_at_end in [false, true] {
        let (fs, appended, durable, seg) = log_with_unsynced_tail(checkpoint_at_end);
        let (full, synced, end) = unsynced_tail(&fs, &seg, &appended);
        for byte in synced..end {
            for bit in [0, 3, 7] {
                let mut damaged = full.clone();
                damaged[byte] ^= 1 << bit;
                let image = fs.process_crash_image();
                image.write_file(&seg, &damaged);
                let log = PartitionLog::open_with(dir(), small(1 << 20), image.env()).unwrap();
                assert_eq!(
                    log.offsets().high_watermark,
                    durable,
                    "byte {byte} bit {bit}"
                );
                check_recovered(&log, &appended, durable);
            }
        }
    }
}

#[test]
fn a_failed_fsync_poisons_the_log_until_reopened() {
    let fs = SimFs::default();
    let log = PartitionLog::open_with(dir(), LogConfig::default(), fs.env()).unwrap();
    let a = batch(0, 1, 1);
    log.append(&a).unwrap();
    log.sync_to(1).unwrap();
    log.append(&batch(1, 1, 1)).unwrap();
    fs.set_fail_syncs(true);
    assert!(matches!(log.sync_to(2), Err(FlushError::Io(_))));
    fs.set_fail_syncs(false);
    // The failed fsync may have lost pages: no pretending, no more writes or syncs.
    assert!(matches!(
        log.append(&batch(2, 1, 1)),
        Err(AppendError::Poisoned)
    ));
    assert!(matches!(log.sync_to(2), Err(FlushError::Poisoned)));
    assert!(matches!(log.flush(), Err(FlushError::Poisoned)));
    assert_eq!(log.offsets().durable_end, 1);
    // Reads still work.
    assert_eq!(split(&log.read(0, 1 << 16, true).unwrap().batches).len(), 2);
    let image = fs.crash_image();
    drop(log);
    let log = PartitionLog::open_with(dir(), LogConfig::default(), image.env()).unwrap();
    check_recovered(&log, &[(0, stored(&a, 0))], 1);
}

#[test]
fn concurrent_appenders_with_group_commit_lose_nothing_acknowledged() {
    let fs = SimFs::default();
    let log = std::sync::Arc::new(PartitionLog::open_with(dir(), small(4096), fs.env()).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..25u64 {
                    let b = batch(t * 100 + i, 2, 1);
                    let info = log.append(&b).unwrap();
                    log.sync_to(info.last_offset + 1).unwrap();
                    assert!(log.offsets().durable_end > info.last_offset);
                    acked.push((info.base_offset, stored(&b, info.base_offset)));
                }
                acked
            })
        })
        .collect();
    let mut acked: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    acked.sort();
    let image = fs.crash_image();
    let log = std::sync::Arc::into_inner(log).unwrap();
    std::mem::forget(log);
    let log = PartitionLog::open_with(dir(), small(4096), image.env()).unwrap();
    assert_eq!(log.offsets().high_watermark, 400);
    check_recovered(&log, &acked, 400);
}

#[test]
fn a_corrupt_or_missing_checkpoint_falls_back_to_scanning_everything() {
    let fs = SimFs::default();
    let log = PartitionLog::open_with(dir(), small(1024), fs.env()).unwrap();
    let mut appended = Vec::new();
    for i in 0..30u64 {
        let b = batch(i, 2, 10);
        let info = log.append(&b).unwrap();
        appended.push((info.base_offset, stored(&b, info.base_offset)));
    }
    log.close().unwrap();
    assert!(segment_files(&fs).len() > 2);
    let cp = Path::new(DIR).join("checkpoint");
    let mut bytes = fs.contents(&cp).unwrap();
    bytes[10] ^= 0xff;
    let image = fs.process_crash_image();
    image.write_file(&cp, &bytes);
    let log = PartitionLog::open_with(dir(), small(1024), image.env()).unwrap();
    check_recovered(&log, &appended, 60);
    let image = fs.process_crash_image();
    image.write_file(&cp, &[]);
    let log = PartitionLog::open_with(dir(), small(1024), image.env()).unwrap();
    check_recovered(&log, &appended, 60);
}

#[test]
fn reopening_after_a_clean_close_reads_none_of_the_data() {
    let fs = SimFs::default();
    let log = PartitionLog::open_with(dir(), small(4096), fs.env()).unwrap();
    let b = batch(0, 8, 10);
    for _ in 0..2000 {
        log.append(&b).unwrap();
    }
    let size = log.size_bytes();
    log.close().unwrap();
    assert!(segment_files(&fs).len() > 50);
    let before = fs.bytes_read();
    let log = PartitionLog::open_with(dir(), small(4096), fs.env()).unwrap();
    let read = fs.bytes_read() - before;
    // The checkpoint, the active segment's index and one batch header per roll check: a few KiB.
    assert!(read < size / 50, "open read {read} of {size} bytes");
    assert_eq!(log.offsets().high_watermark, 16_000);
    // After a crash only the tail since the last checkpoint is scanned.
    for _ in 0..10 {
        log.append(&b).unwrap();
    }
    log.flush().unwrap();
    let image = fs.crash_image();
    drop(log);
    let before = image.bytes_read();
    let log = PartitionLog::open_with(dir(), small(4096), image.env()).unwrap();
    assert!(image.bytes_read() - before < 16 * 1024);
    assert_eq!(log.offsets().high_watermark, 16_080);
}

/// A config whose active segment reserves `preallocate_bytes` ahead of its end.
fn reserving(segment_bytes: u64, preallocate_bytes: u64) -> LogConfig {
    LogConfig {
        preallocate_bytes,
        ..small(segment_bytes)
    }
}

#[test]
fn space_is_reserved_ahead_of_the_active_segment_and_cut_when_it_closes() {
    let fs = SimFs::default();
    let config = reserving(16 << 10, 4 << 10);
    let log = PartitionLog::open_with(dir(), config.clone(), fs.env()).unwrap();
    let mut appended = Vec::new();
    let mut data_bytes = 0;
    while segment_files(&fs).len() < 2 {
        let b = batch(appended.len() as u64, 3, 10);
        let info = log.append(&b).unwrap();
        appended.push((info.base_offset, stored(&b, info.base_offset)));
        data_bytes += b.len();
        if segment_files(&fs).len() == 1 {
            let len = fs.contents(&segment_files(&fs)[0]).unwrap().len();
            assert!(
                len > data_bytes,
                "nothing reserved: {len} bytes for {data_bytes}"
            );
            assert!(
                len as u64 <= config.segment_bytes,
                "reserved past segment_bytes"
            );
        }
    }
    // The closed segment holds its batches and nothing after them.
    let closed = split(&fs.contents(&segment_files(&fs)[0]).unwrap());
    assert_eq!(closed, appended[..closed.len()]);
    let last = appended.last().unwrap().1.len();
    let active = fs.contents(&segment_files(&fs)[1]).unwrap();
    assert!(active.len() > last && active[last..].iter().all(|b| *b == 0));
    // A clean close cuts the reserve; the reopened log reads everything and writes on.
    log.close().unwrap();
    assert_eq!(fs.contents(&segment_files(&fs)[1]).unwrap().len(), last);
    let log = PartitionLog::open_with(dir(), config, fs.env()).unwrap();
    let b = batch(99, 2, 10);
    let info = log.append(&b).unwrap();
    appended.push((info.base_offset, stored(&b, info.base_offset)));
    check_recovered(&log, &appended, info.last_offset + 1);
}

#[test]
fn a_crash_leaving_reserved_space_recovers_the_durable_batches_and_appends_after_them() {
    let fs = SimFs::default();
    let config = reserving(1 << 20, 64 << 10);
    let log = PartitionLog::open_with(dir(), config.clone(), fs.env()).unwrap();
    let mut appended = Vec::new();
    for i in 0..5u64 {
        let b = batch(i, 2, 10);
        let info = log.append(&b).unwrap();
        appended.push((info.base_offset, stored(&b, info.base_offset)));
    }
    let durable = log.offsets().high_watermark;
    log.sync_to(durable).unwrap();
    let image = fs.crash_image();
    std::mem::forget(log);
    let seg = segment_files(&image).pop().unwrap();
    let data: usize = appended.iter().map(|(_, b)| b.len()).sum();
    assert!(
        image.contents(&seg).unwrap().len() > data,
        "the reserve is durable"
    );

    let log = PartitionLog::open_with(dir(), config.clone(), image.env()).unwrap();
    assert_eq!(
        image.contents(&seg).unwrap().len(),
        data,
        "recovery cut the zeros"
    );
    assert_eq!(read_all(&log), appended);
    // Appends go right after the recovered batches, across another crash.
    let b = batch(7, 3, 10);
    let info = log.append(&b).unwrap();
    appended.push((info.base_offset, stored(&b, info.base_offset)));
    log.sync_to(info.last_offset + 1).unwrap();
    let image = image.crash_image();
    std::mem::forget(log);
    let log = PartitionLog::open_with(dir(), config, image.env()).unwrap();
    check_recovered(&log, &appended, info.last_offset + 1);
}

#[test]
fn without_a_reserve_the_active_segment_grows_with_its_writes() {
    let fs = SimFs::default();
    let log = PartitionLog::open_with(dir(), reserving(1 << 20, 0), fs.env()).unwrap();
    let b = batch(0, 2, 10);
    log.append(&b).unwrap();
    assert_eq!(fs.contents(&segment_files(&fs)[0]).unwrap().len(), b.len());
}
