//! Many logs sharing one open-file cache: more partitions than open files allowed, reads and
//! writes interleaved across all of them, the process's descriptor limit, and recovery of many
//! partitions after a crash.

use std::path::PathBuf;

use herald_storage::{AppendError, Env, LogConfig, PartitionLog, SimFs, is_open_files_limit};

use crate::support::{batch, small, split, stored};

fn dir(p: usize) -> PathBuf {
    PathBuf::from(format!("/data/t-{p}"))
}

/// A small deterministic generator, so a failure replays exactly.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn open_all(n: usize, config: &LogConfig, env: &Env) -> Vec<PartitionLog> {
    (0..n)
        .map(|p| PartitionLog::open_with(&dir(p), config.clone(), env.clone()).unwrap())
        .collect()
}

#[test]
fn interleaved_reads_and_writes_across_more_partitions_than_open_files() {
    const PARTITIONS: usize = 60;
    const OPEN_FILES_MAX: usize = 16;
    let fs = SimFs::default();
    let env = fs.env().with_open_files_max(OPEN_FILES_MAX);
    // Small segments, so closed segments (and their index files) are read too.
    let config = small(2_000);
    let logs = open_all(PARTITIONS, &config, &env);
    assert!(fs.open_files() <= OPEN_FILES_MAX as u64);
    // The model: every partition's batches as stored.
    let mut model: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); PARTITIONS];
    let mut rng = Lcg(7);
    for step in 0..3_000u64 {
        let p = rng.below(PARTITIONS);
        let log = &logs[p];
        if rng.below(3) == 0 {
            let b = batch(step, 1 + rng.below(4), 1_000 + step as i64);
            let info = log.append(&b).unwrap();
            // acks=all: a written file stays open until its fsync, then may be closed.
            log.sync_to(info.last_offset + 1).unwrap();
            model[p].push((info.base_offset, stored(&b, info.base_offset)));
        } else if let Some(i) = (!model[p].is_empty()).then(|| rng.below(model[p].len())) {
            let (base, bytes) = &model[p][i];
            let read = log.read(*base, 1, true).unwrap();
            assert_eq!(
                split(&read.batches)[0],
                (*base, bytes.clone()),
                "partition {p}"
            );
        }
        assert!(
            fs.open_files() <= OPEN_FILES_MAX as u64,
            "{} files open, limit {OPEN_FILES_MAX}",
            fs.open_files()
        );
    }
    let stats = env.files.stats();
    assert!(stats.evictions > 0 && stats.hits > 0, "{stats:?}");
    // Every partition reads back whole, from the start, through the cache.
    for (p, log) in logs.iter().enumerate() {
        let mut got = Vec::new();
        let mut next = 0;
        while next < log.offsets().high_watermark {
            let read = log.read(next, 1 << 16, true).unwrap();
            for (base, bytes) in split(&read.batches) {
                next = base + u64::from(u32::from_be_bytes(bytes[57..61].try_into().unwrap()));
                got.push((base, bytes));
            }
        }
        assert_eq!(got, model[p], "partition {p}");
    }
    drop(logs);
    assert_eq!(fs.open_files(), 0, "closed logs leave no file open");
}

#[test]
fn a_written_file_stays_open_until_its_fsync() {
    let fs = SimFs::default();
    let env = fs.env().with_open_files_max(2);
    let config = LogConfig::default();
    let logs = open_all(4, &config, &env);
    // Unsynced appends to every partition: none of their files may be closed, so the cache
    // goes over its limit rather than drop a write no fsync has covered.
    for log in &logs {
        log.append(&batch(1, 1, 1_000)).unwrap();
    }
    assert!(env.files.stats().open_files >= 4);
    for log in &logs {
        log.flush().unwrap();
    }
    // Once synced they can go; the next lookups bring the cache back under its limit.
    for log in &logs {
        log.read(0, 1 << 16, true).unwrap();
    }
    assert!(env.files.stats().open_files <= 2);
}

#[test]
fn the_process_descriptor_limit_is_a_clear_error_that_does_not_poison_the_log() {
    let fs = SimFs::default();
    let env = fs.env().with_open_files_max(2);
    let logs = open_all(3, &LogConfig::default(), &env);
    // Two unsynced files pin their descriptors; the process allows no more.
    logs[0].append(&batch(1, 1, 1_000)).unwrap();
    logs[1].append(&batch(1, 1, 1_000)).unwrap();
    fs.set_open_files_limit(Some(fs.open_files()));
    match logs[2].append(&batch(1, 1, 1_000)) {
        Err(AppendError::Io(e)) => assert!(is_open_files_limit(&e), "{e}"),
        other => panic!("expected the descriptor limit, got {other:?}"),
    }
    assert_eq!(env.files.stats().open_files_refused, 1);
    // Nothing was written, so the log is not poisoned: once descriptors are free it works.
    logs[0].flush().unwrap();
    logs[1].flush().unwrap();
    let info = logs[2].append(&batch(2, 1, 1_000)).unwrap();
    assert_eq!(info.base_offset, 0);
    logs[2].flush().unwrap();
}

#[test]
fn every_acknowledged_record_survives_a_crash_of_many_partitions() {
    const PARTITIONS: usize = 200;
    let fs = SimFs::default();
    let env = fs.env().with_open_files_max(32);
    let config = small(4_000);
    let logs = open_all(PARTITIONS, &config, &env);
    let mut acked: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); PARTITIONS];
    let mut rng = Lcg(11);
    for step in 0..2_000u64 {
        let p = rng.below(PARTITIONS);
        let b = batch(step, 1 + rng.below(3), 1_000);
        let info = logs[p].append(&b).unwrap();
        // Only some appends are acknowledged (fsynced); the rest may be lost, never half.
        if rng.below(2) == 0 {
            logs[p].sync_to(info.last_offset + 1).unwrap();
            acked[p].push((info.base_offset, stored(&b, info.base_offset)));
        }
    }
    let image = fs.crash_image();
    std::mem::forget(logs);
    let env = image.env().with_open_files_max(32);
    let logs = open_all(PARTITIONS, &config, &env);
    for (p, log) in logs.iter().enumerate() {
        for (base, bytes) in &acked[p] {
            let read = log.read(*base, 1, true).unwrap();
            assert_eq!(
                split(&read.batches)[0],
                (*base, bytes.clone()),
                "partition {p}"
            );
        }
    }
    assert!(image.open_files() <= 32);
}

#[test]
fn a_clean_reopen_of_many_partitions_writes_nothing_and_opens_no_segment() {
    const PARTITIONS: usize = 100;
    let fs = SimFs::default();
    let env = fs.env().with_open_files_max(16);
    let config = LogConfig::default();
    let logs = open_all(PARTITIONS, &config, &env);
    // Half are written, half never: neither kind may be rewritten by a clean reopen.
    for (p, log) in logs.iter().enumerate().filter(|(p, _)| p % 2 == 0) {
        log.append(&batch(p as u64, 2, 1_000)).unwrap();
    }
    drop(logs);
    let before: Vec<_> = fs
        .paths()
        .into_iter()
        .map(|p| (fs.contents(&p), p))
        .collect();
    let env = fs.env().with_open_files_max(16);
    let logs = open_all(PARTITIONS, &config, &env);
    let after: Vec<_> = fs
        .paths()
        .into_iter()
        .map(|p| (fs.contents(&p), p))
        .collect();
    assert_eq!(before, after, "a clean reopen changed files");
    assert_eq!(env.files.stats().open_files, 0, "no segment file kept open");
    for (p, log) in logs.iter().enumerate() {
        let expected = if p % 2 == 0 { 2 } else { 0 };
        assert_eq!(log.offsets().high_watermark, expected, "partition {p}");
    }
}

#[test]
fn a_checkpoint_without_a_descriptor_is_postponed_not_poisoning() {
    let fs = SimFs::default();
    let env = fs.env().with_open_files_max(1);
    let logs = open_all(2, &LogConfig::default(), &env);
    logs[0].append(&batch(1, 1, 1_000)).unwrap();
    logs[1].append(&batch(1, 1, 1_000)).unwrap();
    // The other log's unsynced file holds the only descriptor the process has.
    fs.set_open_files_limit(Some(fs.open_files()));
    fs.clock()
        .advance_ms(LogConfig::default().checkpoint_interval_ms as i64 + 1);
    logs[0].flush().unwrap();
    assert!(logs[1].maintain().is_err());
    fs.set_open_files_limit(None);
    let outcome = logs[1].maintain().unwrap();
    assert!(outcome.checkpointed);
    logs[1].append(&batch(2, 1, 1_000)).unwrap();
}
