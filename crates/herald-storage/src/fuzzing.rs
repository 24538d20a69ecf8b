//! The fuzz target's body: build a partition directory from arbitrary bytes, open it and use it.
//! The last step opens the directory as a compacted log and runs a cleaner pass over it.
//! Lives in the library so the cargo-fuzz target and the ordinary (stable) test suite run the same
//! code; it must never panic or hang whatever the bytes are.

use std::path::{Path, PathBuf};

use crate::batch::build_batch;
use crate::config::{CleanupPolicy, LogConfig};
use crate::env::SimFs;
use crate::log::{KEY_MAP_ENTRY_BYTES, PartitionLog, Throttle};

/// Reads performed at most, so a log claiming billions of offsets cannot make the target hang.
const READS_MAX: usize = 2_000;

/// Interprets `data` as files of a partition directory, then opens, reads, appends, deletes,
/// maintains and reopens the log. Errors are fine; panics and hangs are bugs.
///
/// Input: a sequence of entries `kind u8, base u8, len u16 (LE), len bytes`. `kind % 5`:
/// 0 `.log`, 1 `.index`, 2 `.timeindex`, 3 `checkpoint`, 4 a valid batch (its records are the
/// bytes) appended to the `.log` file of `base`, so the fuzzer reaches past CRC checks easily.
pub fn open_arbitrary_dir(data: &[u8]) {
    let dir = Path::new("/fuzz");
    let fs = SimFs::default();
    let mut rest = data;
    while rest.len() >= 4 {
        let (kind, base) = (rest[0] % 5, u64::from(rest[1]) * 7);
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]])).min(rest.len() - 4);
        let bytes = &rest[4..4 + len];
        rest = &rest[4 + len..];
        let name = |ext: &str| -> PathBuf { dir.join(format!("{base:020}.{ext}")) };
        match kind {
            0 => fs.write_file(&name("log"), bytes),
            1 => fs.write_file(&name("index"), bytes),
            2 => fs.write_file(&name("timeindex"), bytes),
            3 => fs.write_file(&dir.join("checkpoint"), bytes),
            _ => {
                let path = name("log");
                let mut content = fs.contents(&path).unwrap_or_default();
                let values: Vec<&[u8]> = bytes.chunks(7).collect();
                if values.is_empty() {
                    continue;
                }
                let mut b = build_batch(i64::from(rest.len() as u32), &[], &values, None);
                let records = values.len() as u64;
                // Offsets continuing the file when it is ours, so recovery accepts the batch.
                let offset = base + content.len() as u64 / 64 * records;
                b[0..8].copy_from_slice(&offset.to_be_bytes());
                content.extend_from_slice(&b);
                fs.write_file(&path, &content);
            }
        }
    }
    let config = LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let Ok(log) = PartitionLog::open_with(dir, config.clone(), fs.env()) else {
        return;
    };
    exercise(&log);
    // The image is taken first, so closing the log afterwards does not touch it.
    let image = fs.crash_image();
    drop(log);
    if let Ok(log) = PartitionLog::open_with(dir, config.clone(), image.env()) {
        exercise(&log);
    }
    // The same directory as a compacted log: a cleaner pass (with a key map too small for one
    // pass) over whatever recovery kept, then the reads again.
    let compact = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        ..config
    };
    if let Ok(log) = PartitionLog::open_with(dir, compact, image.env()) {
        let _ = log.clean(4 * KEY_MAP_ENTRY_BYTES, &Throttle::new(None));
        exercise(&log);
    }
}

fn exercise(log: &PartitionLog) {
    let offsets = log.offsets();
    let mut next = offsets.log_start;
    for _ in 0..READS_MAX {
        if next >= offsets.high_watermark {
            break;
        }
        match log.read(next, 4096, true) {
            Ok(r) if !r.batches.is_empty() => next += 1,
            _ => next = next.saturating_add(1 + (offsets.high_watermark - next) / 16),
        }
    }
    for ts in [i64::MIN, -1, 0, 1_000, i64::MAX] {
        let _ = log.offset_for_timestamp(ts);
    }
    let _ = log.append(&build_batch(5, &[], &[b"after"], Some((1, 0, 0))));
    let _ = log.sync_to(u64::MAX);
    let _ = log.delete_records_before(offsets.log_start / 2 + offsets.high_watermark / 2);
    let _ = log.maintain();
    let _ = log.read(log.offsets().log_start, 1 << 16, true);
}
