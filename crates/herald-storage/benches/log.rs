//! Criterion benchmarks of the partition log: appends of 1 KiB records in ~16 KiB batches under
//! flush `Never` and `Always` with 1, 4 and 16 appender threads, and sequential reads of a cold
//! (evicted from the page cache) and a warm segment. See docs/benchmarks.md for figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald_storage::{FlushPolicy, LogConfig, PartitionLog, build_batch};

const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 16;

fn one_batch() -> Vec<u8> {
    let value = vec![0x5a; RECORD_BYTES];
    let values: Vec<&[u8]> = (0..RECORDS_PER_BATCH).map(|_| value.as_slice()).collect();
    build_batch(1_700_000_000_000, &[], &values, None)
}

fn bench_dir() -> tempfile::TempDir {
    // Under the target directory, i.e. on the disk under test; HERALD_BENCH_DIR picks another.
    let base = std::env::var_os("HERALD_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into());
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        flush,
        segment_bytes: 256 << 20,
        // Benchmarks write many GB; keep only the newest 1 GiB so the disk does not fill.
        retention_bytes: Some(1 << 30),
        ..LogConfig::default()
    }
}

/// `iters` batches appended by `threads` threads; each appender waits for durability when the
/// policy is `Always` (as a producer with acks=all does).
fn append_run(log: &Arc<PartitionLog>, batch: &Arc<Vec<u8>>, threads: u64, iters: u64) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (log, batch) = (log.clone(), batch.clone());
            let n = iters / threads + u64::from(t < iters % threads);
            std::thread::spawn(move || {
                for _ in 0..n {
                    let info = log.append(&batch).unwrap();
                    log.sync_to(info.last_offset + 1).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed();
    log.maintain().unwrap();
    elapsed
}

fn append(c: &mut Criterion) {
    let batch = Arc::new(one_batch());
    let mut group = c.benchmark_group("append_16KiB_batches");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for (name, flush) in [
        ("never", FlushPolicy::Never),
        ("always", FlushPolicy::Always),
    ] {
        for threads in [1u64, 4, 16] {
            let dir = bench_dir();
            let log = Arc::new(PartitionLog::open(dir.path(), config(flush)).unwrap());
            group.bench_function(BenchmarkId::new(name, threads), |b| {
                b.iter_custom(|iters| append_run(&log, &batch, threads, iters));
            });
            let stats = log.stats();
            if stats.group_commits > 0 {
                eprintln!(
                    "{name}/{threads}: {:.1} batches per fsync",
                    stats.appends as f64 / stats.group_commits as f64
                );
            }
        }
    }
    group.finish();
}

const READ_SEGMENT_BYTES: u64 = 256 << 20;
const FETCH_BYTES: usize = 1 << 20;

fn filled_log(dir: &Path) -> PartitionLog {
    let log = PartitionLog::open(dir, config(FlushPolicy::Never)).unwrap();
    let batch = one_batch();
    while log.size_bytes() < READ_SEGMENT_BYTES - batch.len() as u64 {
        log.append(&batch).unwrap();
    }
    log.flush().unwrap();
    log
}

/// Reads the whole log from the start in 1 MiB fetches, as a consumer catching up does.
fn read_all(log: &PartitionLog, batch_bytes: usize) -> u64 {
    let hw = log.offsets().high_watermark;
    let (mut next, mut bytes) = (0u64, 0u64);
    while next < hw {
        let r = log.read(next, FETCH_BYTES, true).unwrap();
        bytes += r.batches.len() as u64;
        next += (r.batches.len() / batch_bytes * RECORDS_PER_BATCH) as u64;
    }
    bytes
}

/// Evicts the segment files from the page cache (they are clean after `flush`).
fn evict(dir: &Path) {
    use std::os::fd::AsRawFd;
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = std::fs::File::open(entry.unwrap().path()).unwrap();
        // SAFETY: posix_fadvise only reads the descriptor, which `file` keeps open for the call.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
    }
}

fn read(c: &mut Criterion) {
    let dir = bench_dir();
    let log = filled_log(dir.path());
    let batch_bytes = one_batch().len();
    let total = read_all(&log, batch_bytes);
    let mut group = c.benchmark_group("read_256MiB_segment");
    group.throughput(Throughput::Bytes(total));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("warm", |b| b.iter(|| read_all(&log, batch_bytes)));
    group.bench_function("cold", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                evict(dir.path());
                let start = Instant::now();
                assert_eq!(read_all(&log, batch_bytes), total);
                spent += start.elapsed();
            }
            spent
        });
    });
    group.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
