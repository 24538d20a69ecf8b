//! Log compaction: the cleaner keeps the latest record per key, removes old tombstones, keeps
//! offsets and untouched batches, never touches the active segment, and its swap survives a
//! crash at every step.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use herald_storage::{
    CleanupPolicy, Clock, Compression, DEFAULT_DEDUPE_BUFFER_BYTES, Env, FileSystem, KeyedRecord,
    LogConfig, ManualClock, OsFileSystem, PartitionLog, SimFs, StoredRecord, Throttle,
    build_keyed_batch, decode_records,
};

use crate::compaction_transactions::{RawBatch, end_txn, raw_batches, txn_put};

pub(crate) const T0: i64 = 1_700_000_000_000;
pub(crate) const HOUR_MS: u64 = 3_600_000;

pub(crate) fn compacted(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: HOUR_MS,
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: 10 * HOUR_MS,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

/// Appends one batch of `(key, value)` updates (`None` value: a tombstone).
pub(crate) fn put(
    log: &PartitionLog,
    ts: i64,
    records: &[(String, Option<String>)],
    codec: Option<Compression>,
) {
    let refs: Vec<KeyedRecord<'_>> = records
        .iter()
        .map(|(k, v)| (Some(k.as_bytes()), v.as_ref().map(|v| v.as_bytes())))
        .collect();
    log.append(&build_keyed_batch(ts, &refs, codec)).unwrap();
}

/// Every record from the log start to the end.
pub(crate) fn read_all(log: &PartitionLog) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    let mut offset = log.offsets().log_start;
    let end = log.offsets().high_watermark;
    while offset < end {
        let read = log.read(offset, 1 << 20, true).unwrap();
        let records = decode_records(&read.batches).expect("decodable batches");
        // Cleaning may leave nothing between the last kept record and an empty active segment.
        if read.batches.is_empty() {
            break;
        }
        for r in records {
            if r.offset >= offset {
                offset = r.offset + 1;
                out.push(r);
            }
        }
        let last = last_offset_of(&read.batches);
        offset = offset.max(last + 1);
    }
    out
}

/// The last offset the batches cover (their last offset deltas).
fn last_offset_of(mut batches: &[u8]) -> u64 {
    let mut last = 0;
    while batches.len() >= 61 {
        let base = u64::from_be_bytes(batches[0..8].try_into().unwrap());
        let delta = i32::from_be_bytes(batches[23..27].try_into().unwrap());
        let len = i32::from_be_bytes(batches[8..12].try_into().unwrap()) as usize + 12;
        last = base + delta as u64;
        batches = &batches[len..];
    }
    last
}

/// The latest value per key in `records` (tombstones as `None`).
pub(crate) fn latest(records: &[StoredRecord]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    for r in records {
        out.insert(r.key.clone().unwrap(), r.value.clone());
    }
    out
}

/// Rolls the active segment by moving the clock past `segment_ms`.
pub(crate) fn roll(log: &PartitionLog, clock: &ManualClock) {
    clock.advance_ms(HOUR_MS as i64 + 1);
    assert!(log.maintain().unwrap().rolled);
}

pub(crate) fn clean_all(log: &PartitionLog, buffer: u64) -> usize {
    let throttle = Throttle::new(None);
    let mut passes = 0;
    loop {
        let out = log.clean(buffer, &throttle).unwrap();
        passes += 1;
        if !out.more {
            return passes;
        }
        assert!(passes < 1000, "cleaning does not converge");
    }
}

#[test]
fn a_million_updates_over_ten_thousand_keys_keep_the_latest_value_per_key_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let env = || Env::new(Arc::new(OsFileSystem), clock.clone());
    let config = compacted(8 << 20);
    let log = PartitionLog::open_with(dir.path(), config.clone(), env()).unwrap();
    let keys = 10_000u64;
    let mut model: HashMap<u64, u64> = HashMap::new();
    let mut seq = 0u64;
    for _ in 0..10_000 {
        let batch: Vec<(String, Option<String>)> = (0..100)
            .map(|_| {
                // A multiplicative walk visits the keys in a scrambled order.
                let key = (seq * 7919) % keys;
                model.insert(key, seq);
                let record = (format!("key-{key}"), Some(format!("value-{seq}")));
                seq += 1;
                record
            })
            .collect();
        put(&log, clock.now_ms(), &batch, None);
    }
    // Tombstones for the first 100 keys.
    let tombstones: Vec<(String, Option<String>)> =
        (0..100).map(|k| (format!("key-{k}"), None)).collect();
    put(&log, clock.now_ms(), &tombstones, None);
    roll(&log, &clock);
    let before = log.size_bytes();
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    assert!(
        log.size_bytes() < before / 50,
        "{} of {before} bytes left",
        log.size_bytes()
    );
    drop(log);

    let log = PartitionLog::open_with(dir.path(), config.clone(), env()).unwrap();
    let records = read_all(&log);
    assert_eq!(
        records.len(),
        keys as usize,
        "one record per key, tombstones included"
    );
    let got = latest(&records);
    for (key, seq) in &model {
        let want = (*key >= 100).then(|| format!("value-{seq}").into_bytes());
        assert_eq!(got[format!("key-{key}").as_bytes()], want, "key {key}");
    }
    // The tombstones are still there before `delete_retention_ms`; after it (and a pass, which
    // some new dirty data makes due) they are gone.
    clock.advance_ms(10 * HOUR_MS as i64);
    put(
        &log,
        clock.now_ms(),
        &[("other".into(), Some("x".into()))],
        None,
    );
    roll(&log, &clock);
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    drop(log);
    let log = PartitionLog::open_with(dir.path(), config, env()).unwrap();
    let records = read_all(&log);
    assert_eq!(records.len(), keys as usize - 100 + 1);
    assert!(records.iter().all(|r| r.value.is_some()));
    let got = latest(&records);
    assert!(!got.contains_key(&b"key-5"[..]));
    assert_eq!(
        got[&b"key-500"[..]],
        Some(format!("value-{}", model[&500]).into_bytes())
    );
}

#[test]
fn a_small_key_map_cleans_in_passes_to_the_same_result() {
    let fs = SimFs::default();
    fs.clock().set_ms(T0);
    let dir = Path::new("/passes");
    let log = PartitionLog::open_with(dir, compacted(4096), fs.env()).unwrap();
    for i in 0..2000u64 {
        put(
            &log,
            T0,
            &[(format!("k{}", i % 300), Some(format!("v{i}")))],
            None,
        );
    }
    roll(&log, fs.clock());
    let before = latest(&read_all(&log));
    // Room for 50 keys: the 300 keys take several passes.
    let passes = clean_all(&log, 50 * herald_storage::KEY_MAP_ENTRY_BYTES);
    assert!(passes > 3, "{passes} passes");
    let records = read_all(&log);
    assert_eq!(records.len(), 300);
    assert_eq!(latest(&records), before);
    // Offsets keep their gaps: ascending, the last one still the last written.
    assert!(records.windows(2).all(|w| w[0].offset < w[1].offset));
    assert_eq!(records.last().unwrap().offset, 1999);
    assert_eq!(log.offsets().high_watermark, 2000);
}

#[test]
fn compressed_batches_are_cleaned_and_keep_their_codec() {
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let fs = SimFs::default();
        fs.clock().set_ms(T0);
        let log = PartitionLog::open_with(Path::new("/c"), compacted(1 << 20), fs.env()).unwrap();
        for round in 0..5 {
            let batch: Vec<_> = (0..20)
                .map(|k| (format!("k{k}"), Some(format!("r{round}"))))
                .collect();
            put(&log, T0, &batch, Some(codec));
        }
        roll(&log, fs.clock());
        clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
        let read = log.read(0, 1 << 20, true).unwrap();
        let codec_bits = i16::from_be_bytes(read.batches[21..23].try_into().unwrap()) & 7;
        assert_ne!(codec_bits, 0, "{codec:?}");
        let records = read_all(&log);
        assert_eq!(records.len(), 20, "{codec:?}");
        assert!(
            records
                .iter()
                .all(|r| r.value.as_deref() == Some(&b"r4"[..]))
        );
        // The kept batch keeps its base offset and last offset delta.
        assert_eq!(
            u64::from_be_bytes(read.batches[0..8].try_into().unwrap()),
            80
        );
        assert_eq!(log.offsets().high_watermark, 100);
    }
}

#[test]
fn the_active_segment_and_young_segments_are_never_cleaned() {
    let fs = SimFs::default();
    fs.clock().set_ms(T0);
    let config = LogConfig {
        min_compaction_lag_ms: 10 * HOUR_MS,
        ..compacted(1 << 20)
    };
    let log = PartitionLog::open_with(Path::new("/a"), config.clone(), fs.env()).unwrap();
    for i in 0..10 {
        put(&log, T0, &[("k".into(), Some(format!("v{i}")))], None);
    }
    // Everything in the active segment: nothing to clean.
    assert!(!log.clean(1 << 20, &Throttle::new(None)).unwrap().swapped);
    assert_eq!(read_all(&log).len(), 10);
    roll(&log, fs.clock());
    // Closed, but younger than min_compaction_lag_ms.
    assert!(!log.clean(1 << 20, &Throttle::new(None)).unwrap().swapped);
    assert_eq!(read_all(&log).len(), 10);
    fs.clock().advance_ms(10 * HOUR_MS as i64);
    let out = log.clean(1 << 20, &Throttle::new(None)).unwrap();
    assert!(out.swapped);
    assert_eq!(out.records_removed, 9);
    assert_eq!(read_all(&log).len(), 1);
}

#[test]
fn the_dirty_ratio_decides_when_a_log_is_due() {
    let fs = SimFs::default();
    fs.clock().set_ms(T0);
    let log = PartitionLog::open_with(Path::new("/r"), compacted(1 << 20), fs.env()).unwrap();
    for i in 0..10 {
        put(&log, T0, &[(format!("k{i}"), Some("v".into()))], None);
    }
    roll(&log, fs.clock());
    let c = log.cleanable().unwrap();
    assert!(c.due && c.dirty_bytes == c.cleanable_bytes && c.dirty_ratio_ppm() == 1_000_000);
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    let c = log.cleanable().unwrap();
    assert!(!c.due && c.dirty_bytes == 0, "{c:?}");
    assert_eq!(c.cleaned_to, 10);
    let delete = PartitionLog::open_with(Path::new("/d"), LogConfig::default(), fs.env()).unwrap();
    assert_eq!(delete.cleanable(), None);
}

#[test]
fn a_reader_from_the_start_during_cleaning_sees_every_key_at_least_as_new() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let env = Env::new(Arc::new(OsFileSystem), clock.clone());
    let log = Arc::new(PartitionLog::open_with(dir.path(), compacted(256 << 10), env).unwrap());
    let mut seq = 0u64;
    for _ in 0..2000 {
        let batch: Vec<_> = (0..50)
            .map(|_| {
                let r = (format!("k{}", (seq * 31) % 1000), Some(format!("{seq:08}")));
                seq += 1;
                r
            })
            .collect();
        put(&log, T0, &batch, None);
    }
    roll(&log, &clock);
    let want = latest(&read_all(&log));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (log, done, want) = (log.clone(), done.clone(), want.clone());
        std::thread::spawn(move || {
            let mut scans = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let records = read_all(&log);
                assert!(records.windows(2).all(|w| w[0].offset < w[1].offset));
                let seen = latest(&records);
                assert_eq!(seen, want, "a key went missing or back in time");
                scans += 1;
                if finished {
                    return scans;
                }
            }
        })
    };
    clean_all(&log, 300 * herald_storage::KEY_MAP_ENTRY_BYTES);
    done.store(true, Ordering::SeqCst);
    assert!(reader.join().unwrap() >= 1);
    assert_eq!(read_all(&log).len(), 1000);
}

/// Appends updates `from..to` of the crash fixture at `ts`: plain updates and tombstones of 13
/// keys, and every ten updates a transaction of one of three producers, every fourth aborted.
fn crash_updates(log: &PartitionLog, seqs: &mut [i32; 3], from: u64, to: u64, ts: i64) {
    for i in from..to {
        let value = (i % 7 != 3).then(|| format!("v{i}"));
        put(log, ts, &[(format!("k{}", i % 13), value)], None);
        let producer = (i / 10 % 3) as usize;
        let pid = 50 + producer as i64;
        let commit = (i / 10) % 4 != 1;
        if i % 10 == 2 {
            let value = format!("{}{i}", if commit { "c" } else { "a" });
            txn_put(
                log,
                pid,
                seqs[producer],
                &[(&format!("k{}", i % 13), Some(&value))],
            );
            seqs[producer] += 1;
        }
        if i % 10 == 6 {
            end_txn(log, pid, commit, ts);
        }
    }
}

/// A log of a few segments with updates, tombstones and transactions: a first part already
/// cleaned (its aborted records gone, their markers left) and past `delete_retention_ms`, a
/// second part dirty; cleaned under an operation budget, a pass drops records, aborted
/// records and markers.
fn crash_fixture(fs: &SimFs) -> PartitionLog {
    fs.clock().set_ms(T0);
    let log = PartitionLog::open_with(Path::new("/crash"), compacted(2048), fs.env()).unwrap();
    let mut seqs = [0; 3];
    crash_updates(&log, &mut seqs, 0, 120, T0);
    roll(&log, fs.clock());
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    fs.clock().advance_ms(10 * HOUR_MS as i64 + 1);
    crash_updates(&log, &mut seqs, 120, 200, fs.clock().now_ms());
    roll(&log, fs.clock());
    log.flush().unwrap();
    log
}

/// What a reader finds: the records, and every batch header (markers and emptied batches).
fn image_of(log: &PartitionLog) -> (Vec<StoredRecord>, Vec<RawBatch>) {
    (read_all(log), raw_batches(log))
}

/// The latest value per key, aborted values (`a...`) left out.
fn latest_committed(records: &[StoredRecord]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let committed: Vec<_> = records
        .iter()
        .filter(|r| !r.value.as_ref().is_some_and(|v| v.starts_with(b"a")))
        .cloned()
        .collect();
    latest(&committed)
}

#[test]
fn a_crash_at_every_step_of_a_cleaner_pass_leaves_the_old_or_the_new_log() {
    let reference = SimFs::default();
    let log = crash_fixture(&reference);
    let old = image_of(&log);
    let out = log
        .clean(DEFAULT_DEDUPE_BUFFER_BYTES, &Throttle::new(None))
        .unwrap();
    assert!(
        out.swapped && !out.more && out.markers_removed > 0,
        "{out:?}"
    );
    let new = image_of(&log);
    assert!(new.0.len() < old.0.len());
    assert!(
        old.0
            .iter()
            .any(|r| r.value.as_ref().is_some_and(|v| v.starts_with(b"a")))
    );
    assert!(
        !new.0
            .iter()
            .any(|r| r.value.as_ref().is_some_and(|v| v.starts_with(b"a")))
    );
    assert_eq!(latest_committed(&old.0), latest_committed(&new.0));
    drop(log);

    let (mut saw_old, mut saw_new) = (false, false);
    for budget in 0.. {
        let fs = SimFs::default();
        let log = crash_fixture(&fs);
        fs.set_ops_budget(Some(budget));
        let finished = log
            .clean(DEFAULT_DEDUPE_BUFFER_BYTES, &Throttle::new(None))
            .is_ok()
            && !fs.ops_budget_spent();
        for image in [fs.crash_image(), fs.process_crash_image()] {
            let reopened =
                PartitionLog::open_with(Path::new("/crash"), compacted(2048), image.env()).unwrap();
            let got = image_of(&reopened);
            if got == old {
                saw_old = true;
            } else if got == new {
                saw_new = true;
            } else {
                panic!("budget {budget}: a mix of old and new segments: {got:?}");
            }
            // Whatever it found, the log cleans to the same records. A crash before the
            // cleaner checkpoint moved leaves the new segments dirty again, and the pass over
            // them may also drop markers whose records the interrupted pass dropped.
            clean_all(&reopened, DEFAULT_DEDUPE_BUFFER_BYTES);
            let (records, batches) = image_of(&reopened);
            assert_eq!(records, new.0, "budget {budget}");
            assert!(
                batches.iter().all(|b| new.1.contains(b)),
                "budget {budget}: {batches:?}"
            );
            let names: Vec<_> = image
                .paths()
                .into_iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            assert!(
                !names
                    .iter()
                    .any(|n| n.ends_with(".cleaned") || n == "clean.swap"),
                "budget {budget}: {names:?}"
            );
        }
        fs.set_ops_budget(None);
        drop(log);
        if finished {
            break;
        }
        assert!(budget < 10_000);
    }
    assert!(saw_old && saw_new);
}

#[test]
fn a_compacted_log_without_its_recovery_checkpoint_is_scanned_with_its_gaps() {
    let fs = SimFs::default();
    let log = crash_fixture(&fs);
    let end = log.offsets().high_watermark;
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    let cleaned = read_all(&log);
    log.close().unwrap();
    // Every segment is scanned: the gaps below the cleaner checkpoint are accepted.
    fs.remove_file(Path::new("/crash/checkpoint")).unwrap();
    let log = PartitionLog::open_with(Path::new("/crash"), compacted(2048), fs.env()).unwrap();
    assert_eq!(read_all(&log), cleaned);
    assert_eq!(log.offsets().high_watermark, end);
}

#[test]
fn a_compacted_log_refuses_records_without_a_key() {
    let fs = SimFs::default();
    let log = PartitionLog::open_with(Path::new("/k"), compacted(1 << 20), fs.env()).unwrap();
    let keyless = build_keyed_batch(T0, &[(Some(b"k"), Some(b"v")), (None, Some(b"v"))], None);
    assert!(matches!(
        log.append(&keyless),
        Err(herald_storage::AppendError::KeylessRecord { position: 0, records }) if records == [1]
    ));
    assert_eq!(log.offsets().high_watermark, 0);
    let compressed = build_keyed_batch(T0, &[(None, Some(b"v"))], Some(Compression::Zstd));
    assert!(log.append(&compressed).is_err());
    // A delete-policy log takes them.
    let delete = PartitionLog::open_with(Path::new("/kd"), LogConfig::default(), fs.env()).unwrap();
    delete.append(&keyless).unwrap();
}

/// One step of the model-based test of a compacted log.
#[derive(Debug, Clone)]
enum Op {
    /// Update `key` (a tombstone when `None`).
    Put(u8, Option<u8>),
    /// Producer `p` writes `key` in its transaction (beginning one if it has none open).
    TxnPut(u8, u8, u8),
    /// Producer `p` commits (`true`) or aborts its open transaction, if it has one.
    End(u8, bool),
    /// Roll the active segment, so what it holds becomes cleanable.
    Roll,
    /// Let `delete_retention_ms` pass.
    Age,
    /// One cleaner pass with room for this many entries, bounded by the first open
    /// transaction and keeping the listed abort markers, as a broker runs it.
    Clean(u8),
    /// Close and reopen.
    Reopen,
    /// The process dies (everything written survives) and the log is reopened.
    ProcessKill,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0u8..8, proptest::option::weighted(0.8, any::<u8>())).prop_map(|(k, v)| Op::Put(k, v)),
        4 => (0u8..3, 0u8..8, any::<u8>()).prop_map(|(p, k, v)| Op::TxnPut(p, k, v)),
        2 => (0u8..3, proptest::bool::weighted(0.6)).prop_map(|(p, c)| Op::End(p, c)),
        2 => Just(Op::Roll),
        1 => Just(Op::Age),
        2 => (1u8..6).prop_map(Op::Clean),
        1 => Just(Op::Reopen),
        1 => Just(Op::ProcessKill),
    ]
}

/// A record the model wrote: key, value, and the transaction it belongs to.
#[derive(Debug, Clone)]
struct Written {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    txn: Option<usize>,
}

/// A transaction the model began: its marker once it ended, and whether it committed.
#[derive(Debug, Clone)]
struct ModelTxn {
    end: Option<(u64, bool)>,
}

/// The log's expected content, and the broker's side: open transactions (the bound), the
/// abort markers it lists, producers' next sequence numbers.
#[derive(Default)]
struct Model {
    written: BTreeMap<u64, Written>,
    txns: Vec<ModelTxn>,
    /// Producer id -> (open transaction, the log end when it began).
    open: HashMap<i64, (usize, u64)>,
    seqs: HashMap<i64, i32>,
    markers: BTreeMap<u64, usize>,
    listed: std::collections::HashSet<(i64, u64)>,
}

impl Model {
    /// Whether a record counts for its key: written outside a transaction or committed.
    fn counts(&self, w: &Written) -> bool {
        w.txn
            .is_none_or(|t| matches!(self.txns[t].end, Some((_, true))))
    }

    fn aborted(&self, w: &Written) -> bool {
        w.txn
            .is_some_and(|t| matches!(self.txns[t].end, Some((_, false))))
    }

    fn clean(&mut self, log: &PartitionLog, entries: u64) -> herald_storage::CleanOutcome {
        let end = log.offsets().high_watermark;
        let below = self
            .open
            .values()
            .map(|(_, first)| *first)
            .fold(end, u64::min);
        let listed = self.listed.clone();
        let is_listed = |pid: i64, offset: u64| listed.contains(&(pid, offset));
        let bounds = herald_storage::CleanBounds {
            below,
            abort_listed: &is_listed,
        };
        // Transactions with records when the pass begins keep their markers through it.
        let with_records: std::collections::HashSet<usize> = read_all(log)
            .iter()
            .filter_map(|r| self.written[&r.offset].txn)
            .collect();
        let out = log
            .clean_below(
                entries * herald_storage::KEY_MAP_ENTRY_BYTES,
                &Throttle::new(None),
                &bounds,
            )
            .unwrap();
        let markers = crate::compaction_transactions::marker_offsets(log);
        for (marker, t) in &self.markers {
            assert!(
                !with_records.contains(t) || markers.contains(marker),
                "marker {marker} dropped in the pass that began with its records"
            );
        }
        for m in &out.abort_markers_without_data {
            self.listed.remove(&(m.producer_id, m.offset));
        }
        out
    }

    fn check(&self, log: &PartitionLog) -> Result<(), proptest::test_runner::TestCaseError> {
        use proptest::prop_assert;
        let records = read_all(log);
        let markers = crate::compaction_transactions::marker_offsets(log);
        let cleaned_to = log.cleanable().unwrap().cleaned_to;
        let mut last = None;
        for r in &records {
            prop_assert!(last < Some(r.offset), "offsets out of order");
            last = Some(r.offset);
            let w = &self.written[&r.offset];
            proptest::prop_assert_eq!(r.key.as_ref(), Some(&w.key));
            proptest::prop_assert_eq!(&r.value, &w.value);
            if let Some(t) = w.txn {
                match self.txns[t].end {
                    // A decided transaction's records never outlive its marker.
                    Some((marker, _)) => prop_assert!(
                        markers.contains(&marker),
                        "record {} without its marker {marker}",
                        r.offset
                    ),
                    // Nothing from an undecided transaction's first record on is cleaned.
                    None => prop_assert!(
                        r.offset >= cleaned_to,
                        "undecided record below {cleaned_to}"
                    ),
                }
            }
            // Every aborted record below the cleaner checkpoint is gone.
            prop_assert!(
                !(self.aborted(w) && r.offset < cleaned_to),
                "aborted record {} below {cleaned_to}",
                r.offset
            );
        }
        for m in &markers {
            prop_assert!(self.markers.contains_key(m), "marker {m} never written");
        }
        // For every key, its latest record written outside a transaction or committed is
        // there (a tombstone may have expired), and aborted values never take its place.
        let mut want = BTreeMap::new();
        for w in self.written.values().filter(|w| self.counts(w)) {
            want.insert(w.key.clone(), w.value.clone());
        }
        let counted: Vec<StoredRecord> = records
            .iter()
            .filter(|r| self.counts(&self.written[&r.offset]))
            .cloned()
            .collect();
        let got = latest(&counted);
        for (key, value) in &want {
            match value {
                Some(_) => proptest::prop_assert_eq!(got.get(key), Some(value)),
                None => prop_assert!(matches!(got.get(key), None | Some(None))),
            }
        }
        prop_assert!(got.keys().all(|k| want.contains_key(k)));
        Ok(())
    }
}

/// Runs `ops` against a log and the model, checking after each step; then ends every open
/// transaction and cleans until nothing changes: no aborted record and no marker without a
/// record of its transaction may be left.
fn run_model(ops: Vec<Op>) -> Result<(), proptest::test_runner::TestCaseError> {
    let dir = Path::new("/model");
    let mut fs = SimFs::default();
    fs.clock().set_ms(T0);
    let mut log = PartitionLog::open_with(dir, compacted(1024), fs.env()).unwrap();
    let mut m = Model::default();
    let txn_write = |m: &mut Model, log: &PartitionLog, p: u8, key: u8, value: u8| {
        let pid = 60 + i64::from(p);
        let offset = log.offsets().high_watermark;
        let t = match m.open.get(&pid) {
            Some((t, _)) => *t,
            None => {
                m.txns.push(ModelTxn { end: None });
                m.open.insert(pid, (m.txns.len() - 1, offset));
                m.txns.len() - 1
            }
        };
        let seq = m.seqs.entry(pid).or_insert(0);
        let key = format!("key-{key}");
        let value = format!("txn-{pid}-{value}-{offset}");
        txn_put(log, pid, *seq, &[(&key, Some(&value))]);
        *seq += 1;
        m.written.insert(
            offset,
            Written {
                key: key.into_bytes(),
                value: Some(value.into_bytes()),
                txn: Some(t),
            },
        );
    };
    let end = |m: &mut Model, log: &PartitionLog, p: u8, commit: bool| {
        let pid = 60 + i64::from(p);
        if let Some((t, _)) = m.open.remove(&pid) {
            let offset = end_txn(log, pid, commit, T0);
            m.txns[t].end = Some((offset, commit));
            m.markers.insert(offset, t);
            if !commit {
                m.listed.insert((pid, offset));
            }
        }
    };
    for op in ops {
        match op {
            Op::Put(k, v) => {
                let key = format!("key-{k}");
                let value = v.map(|v| format!("value-{v}-{}", m.written.len()));
                let offset = log.offsets().high_watermark;
                put(&log, T0, &[(key.clone(), value.clone())], None);
                m.written.insert(
                    offset,
                    Written {
                        key: key.into_bytes(),
                        value: value.map(String::into_bytes),
                        txn: None,
                    },
                );
            }
            Op::TxnPut(p, k, v) => txn_write(&mut m, &log, p, k, v),
            Op::End(p, commit) => end(&mut m, &log, p, commit),
            Op::Roll => {
                fs.clock().advance_ms(HOUR_MS as i64 + 1);
                log.maintain().unwrap();
            }
            Op::Age => fs.clock().advance_ms(10 * HOUR_MS as i64 + 1),
            Op::Clean(entries) => {
                m.clean(&log, u64::from(entries));
            }
            Op::Reopen => {
                drop(log);
                log = PartitionLog::open_with(dir, compacted(1024), fs.env()).unwrap();
            }
            Op::ProcessKill => {
                let image = fs.process_crash_image();
                std::mem::forget(log);
                fs = image;
                log = PartitionLog::open_with(dir, compacted(1024), fs.env()).unwrap();
            }
        }
        m.check(&log)?;
    }
    for p in 0..3 {
        end(&mut m, &log, p, false);
    }
    // Each round's pass drops what the previous one left without a record to mark.
    for round in 0..3 {
        fs.clock().advance_ms(10 * HOUR_MS as i64 + 1);
        put(
            &log,
            fs.clock().now_ms(),
            &[(format!("end-{round}"), Some("x".into()))],
            None,
        );
        m.written.insert(
            log.offsets().high_watermark - 1,
            Written {
                key: format!("end-{round}").into_bytes(),
                value: Some(b"x".to_vec()),
                txn: None,
            },
        );
        fs.clock().advance_ms(HOUR_MS as i64 + 1);
        log.maintain().unwrap();
        while m.clean(&log, 1 << 16).more {}
        m.check(&log)?;
    }
    let records = read_all(&log);
    proptest::prop_assert!(
        !records.iter().any(|r| m.aborted(&m.written[&r.offset])),
        "aborted records left"
    );
    for marker in crate::compaction_transactions::marker_offsets(&log) {
        let t = m.markers[&marker];
        proptest::prop_assert!(
            records.iter().any(|r| m.written[&r.offset].txn == Some(t)),
            "marker {marker} left without a record of its transaction"
        );
    }
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Whatever the interleaving of updates, transactions (committed, aborted, open),
    /// rolls, passes (with tables too small for one pass), reopens and kills, the log holds
    /// only records that were written, at their offsets, in order; for every key its latest
    /// record outside a transaction or committed (a tombstone may have expired); no
    /// transaction's records without its marker, no aborted or undecided record below the
    /// cleaner checkpoint; and once everything is decided and cleaned, no aborted record and
    /// no marker without a record.
    #[test]
    fn a_compacted_log_matches_a_model_of_its_latest_values(ops in proptest::collection::vec(op(), 1..60)) {
        run_model(ops)?;
    }
}

/// The case that found the cleaner keeping a key whose tombstone had expired.
#[test]
fn an_expired_tombstone_leaves_its_key_gone() {
    let mut ops = vec![Op::Roll; 8];
    ops.extend([Op::Put(0, None), Op::Roll, Op::Roll, Op::Clean(1)]);
    run_model(ops).unwrap();
}
