//! Log cleaner throughput, and what a cleaner pass costs appends running beside it.
//!
//! Builds a compacted log of `CLEAN_BENCH_MIB` MiB (default 512) of dirty records: 1 KiB values,
//! 16 per batch, over 100,000 keys, all in closed segments. Then, in order: appends alone to
//! another log for `CLEAN_BENCH_APPEND_S` seconds (default 5), cleaning alone (dirty bytes per
//! second of the whole pass), and cleaning while appends run beside it (the append rate during
//! the pass against the rate alone). Appends use flush `never` (no fsync), so they are bound
//! by CPU and page-cache bandwidth, which is what the cleaner competes for. Run:
//! `cargo bench -p herald-storage --bench clean`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald_storage::{
    CleanupPolicy, DEFAULT_DEDUPE_BUFFER_BYTES, FlushPolicy, LogConfig, PartitionLog, Throttle,
    build_keyed_batch,
};

const KEYS: u64 = 100_000;
const RECORDS_PER_BATCH: u64 = 16;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 20,
        flush: FlushPolicy::Never,
        cleanup_policy: CleanupPolicy::Compact,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn batch(seq: &mut u64) -> Vec<u8> {
    let value = vec![b'v'; 1024];
    let keys: Vec<String> = (0..RECORDS_PER_BATCH)
        .map(|i| format!("key-{:08}", (*seq + i).wrapping_mul(7919) % KEYS))
        .collect();
    *seq += RECORDS_PER_BATCH;
    let records: Vec<_> = keys
        .iter()
        .map(|k| (Some(k.as_bytes()), Some(value.as_slice())))
        .collect();
    build_keyed_batch(1_700_000_000_000, &records, None)
}

/// A compacted log holding `bytes` of dirty records, every segment closed.
fn dirty_log(dir: &Path, bytes: u64) -> PartitionLog {
    let log = PartitionLog::open(dir, config()).expect("open");
    let mut seq = 0;
    while log.size_bytes() < bytes {
        log.append(&batch(&mut seq)).expect("append");
    }
    // A zero segment age rolls the active segment at the next maintenance.
    log.set_config(LogConfig {
        segment_ms: 1,
        ..config()
    })
    .expect("config");
    std::thread::sleep(Duration::from_millis(5));
    log.maintain().expect("maintain");
    log.flush().expect("flush");
    log.set_config(config()).expect("config");
    log
}

/// Appends to `log` until `stop`, returning the bytes appended.
fn append_until(log: &PartitionLog, stop: &AtomicBool, appended: &AtomicU64) {
    let mut seq = 0;
    let b = batch(&mut seq);
    while !stop.load(Ordering::Relaxed) {
        log.append(&b).expect("append");
        appended.fetch_add(b.len() as u64, Ordering::Relaxed);
    }
}

fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; any other run (`cargo test --benches`) only checks it builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let bytes = env_u64("CLEAN_BENCH_MIB", 512) << 20;
    let append_s = env_u64("CLEAN_BENCH_APPEND_S", 5);
    let io_bytes_per_s = env_u64("CLEAN_BENCH_IO_BYTES_PER_S", 0);
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");

    // Appends alone.
    let alone_dir = root.path().join("append-alone");
    let alone = PartitionLog::open(&alone_dir, config()).expect("open");
    let stop = AtomicBool::new(false);
    let appended = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| append_until(&alone, &stop, &appended));
        std::thread::sleep(Duration::from_secs(append_s));
        stop.store(true, Ordering::Relaxed);
    });
    let alone_rate = mib_per_s(appended.load(Ordering::Relaxed), start.elapsed());
    drop(alone);
    std::fs::remove_dir_all(&alone_dir).expect("remove");
    println!("append alone: {alone_rate:.0} MiB/s");

    // Cleaning alone.
    let throttle = Throttle::new(Some(io_bytes_per_s));
    let log = dirty_log(&root.path().join("clean-alone"), bytes);
    let start = Instant::now();
    let mut dirty = 0;
    loop {
        let out = log
            .clean(DEFAULT_DEDUPE_BUFFER_BYTES, &throttle)
            .expect("clean");
        dirty += out.bytes_before;
        if !out.more {
            break;
        }
    }
    let elapsed = start.elapsed();
    println!(
        "clean alone: {:.0} MiB of dirty log in {:.2} s = {:.0} MiB/s, {} MiB left",
        dirty as f64 / (1 << 20) as f64,
        elapsed.as_secs_f64(),
        mib_per_s(dirty, elapsed),
        log.size_bytes() >> 20
    );
    drop(log);
    std::fs::remove_dir_all(root.path().join("clean-alone")).expect("remove");

    // Cleaning while appends run beside it.
    let log = Arc::new(dirty_log(&root.path().join("clean-beside"), bytes));
    let other = PartitionLog::open(&root.path().join("append-beside"), config()).expect("open");
    let stop = AtomicBool::new(false);
    let appended = AtomicU64::new(0);
    let start = Instant::now();
    let dirty = std::thread::scope(|s| {
        s.spawn(|| append_until(&other, &stop, &appended));
        let mut dirty = 0;
        loop {
            let out = log
                .clean(DEFAULT_DEDUPE_BUFFER_BYTES, &throttle)
                .expect("clean");
            dirty += out.bytes_before;
            if !out.more {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        dirty
    });
    let elapsed = start.elapsed();
    let beside_rate = mib_per_s(appended.load(Ordering::Relaxed), elapsed);
    println!(
        "clean beside appends: {:.0} MiB/s of dirty log; appends {beside_rate:.0} MiB/s = {:.0}% of alone",
        mib_per_s(dirty, elapsed),
        beside_rate / alone_rate * 100.0
    );
}
