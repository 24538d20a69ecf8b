//! The cleaner and transactions: aborted records go and never shadow committed ones, nothing
//! of an undecided transaction or at the caller's bound is cleaned, markers go only once no
//! record of their transaction is left, consumers had `delete_retention_ms` to read them and
//! (abort markers) the caller no longer lists them, and producers' sequence numbers survive.

use std::path::Path;

use herald_storage::{
    AbortMarker, AppendError, CONTROL_BIT, CleanBounds, Clock, DEFAULT_DEDUPE_BUFFER_BYTES,
    FileSystem, KeyedRecord, PartitionLog, SimFs, TRANSACTIONAL_BIT, Throttle, build_control_batch,
    build_keyed_batch,
};

use crate::compaction::{HOUR_MS, T0, clean_all, compacted, latest, put, read_all, roll};
use crate::support::split;

/// `batch` written by producer `pid` (epoch, first sequence), transactional or only
/// idempotent, its CRC computed again.
pub(crate) fn by_producer(
    mut batch: Vec<u8>,
    pid: i64,
    epoch: i16,
    seq: i32,
    transactional: bool,
) -> Vec<u8> {
    if transactional {
        let attributes = i16::from_be_bytes([batch[21], batch[22]]) | TRANSACTIONAL_BIT;
        batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    }
    batch[43..51].copy_from_slice(&pid.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

fn keyed(records: &[(&str, Option<&str>)]) -> Vec<u8> {
    let refs: Vec<KeyedRecord<'_>> = records
        .iter()
        .map(|(k, v)| (Some(k.as_bytes()), v.map(str::as_bytes)))
        .collect();
    build_keyed_batch(T0, &refs, None)
}

/// Appends a transactional batch of producer `pid` (epoch 0) with first sequence `seq`.
pub(crate) fn txn_put(log: &PartitionLog, pid: i64, seq: i32, records: &[(&str, Option<&str>)]) {
    log.append(&by_producer(keyed(records), pid, 0, seq, true))
        .unwrap();
}

/// Appends the marker ending producer `pid`'s transaction; its offset.
pub(crate) fn end_txn(log: &PartitionLog, pid: i64, commit: bool, ts: i64) -> u64 {
    log.append(&build_control_batch(pid, 0, commit, 0, ts))
        .unwrap()
        .base_offset
}

/// A batch as stored: where it is, its attributes, producer and records count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawBatch {
    pub base: u64,
    pub attributes: i16,
    pub producer_id: i64,
    pub records: i32,
}

/// Every batch from the log start to the end, control batches included.
pub(crate) fn raw_batches(log: &PartitionLog) -> Vec<RawBatch> {
    let mut out = Vec::new();
    let mut offset = log.offsets().log_start;
    let end = log.offsets().high_watermark;
    while offset < end {
        let read = log.read(offset, 1 << 20, true).unwrap();
        if read.batches.is_empty() {
            break;
        }
        for (base, bytes) in split(&read.batches) {
            let delta = i32::from_be_bytes(bytes[23..27].try_into().unwrap());
            let last = base + delta as u64;
            if last >= offset {
                out.push(RawBatch {
                    base,
                    attributes: i16::from_be_bytes(bytes[21..23].try_into().unwrap()),
                    producer_id: i64::from_be_bytes(bytes[43..51].try_into().unwrap()),
                    records: i32::from_be_bytes(bytes[57..61].try_into().unwrap()),
                });
            }
            offset = offset.max(last + 1);
        }
    }
    out
}

/// Offsets of the control batches left in the log.
pub(crate) fn marker_offsets(log: &PartitionLog) -> Vec<u64> {
    raw_batches(log)
        .into_iter()
        .filter(|b| b.attributes & CONTROL_BIT != 0)
        .map(|b| b.base)
        .collect()
}

fn values(log: &PartitionLog) -> Vec<(String, String)> {
    read_all(log)
        .into_iter()
        .map(|r| {
            (
                String::from_utf8(r.key.unwrap()).unwrap(),
                String::from_utf8(r.value.unwrap_or_default()).unwrap(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn open(fs: &SimFs, dir: &str) -> PartitionLog {
    PartitionLog::open_with(Path::new(dir), compacted(1 << 20), fs.env()).unwrap()
}

fn once(log: &PartitionLog, bounds: &CleanBounds<'_>) -> herald_storage::CleanOutcome {
    log.clean_below(DEFAULT_DEDUPE_BUFFER_BYTES, &Throttle::new(None), bounds)
        .unwrap()
}

#[test]
fn aborted_records_are_removed_and_never_shadow_a_committed_value() {
    let fs = SimFs::default();
    fs.clock().set_ms(T0);
    let log = open(&fs, "/aborted");
    put(&log, T0, &[("k1".into(), Some("plain".into()))], None);
    // Producers 1 and 2 write interleaved; 2 aborts, 1 commits; 3 aborts a later value of k2.
    txn_put(
        &log,
        1,
        0,
        &[("k1", Some("commit-1")), ("k2", Some("commit-1"))],
    );
    txn_put(
        &log,
        2,
        0,
        &[("k1", Some("abort-2")), ("k3", Some("abort-2"))],
    );
    txn_put(&log, 1, 2, &[("k5", Some("commit-1"))]);
    let abort_2 = end_txn(&log, 2, false, T0);
    txn_put(&log, 3, 0, &[("k2", Some("abort-3"))]);
    let commit_1 = end_txn(&log, 1, true, T0);
    let abort_3 = end_txn(&log, 3, false, T0);
    put(&log, T0, &[("k4".into(), Some("plain".into()))], None);
    roll(&log, fs.clock());
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    let want = pairs(&[
        ("k1", "commit-1"),
        ("k2", "commit-1"),
        ("k5", "commit-1"),
        ("k4", "plain"),
    ]);
    assert_eq!(values(&log), want);
    // The markers stay: records of their transactions were there when the pass began, and
    // consumers have `delete_retention_ms` to read them.
    assert_eq!(marker_offsets(&log), vec![abort_2, commit_1, abort_3]);
    drop(log);
    let log = open(&fs, "/aborted");
    assert_eq!(values(&log), want);

    // Past the horizon, a pass (which new dirty data makes due) drops the abort markers, whose
    // records are gone; the commit marker stays with its transaction's records.
    fs.clock().advance_ms(10 * HOUR_MS as i64 + 1);
    put(
        &log,
        fs.clock().now_ms(),
        &[("k6".into(), Some("late".into()))],
        None,
    );
    roll(&log, fs.clock());
    let out = once(&log, &CleanBounds::none());
    assert_eq!(out.markers_removed, 2);
    assert_eq!(marker_offsets(&log), vec![commit_1]);
    let mut want = want;
    want.push(("k6".into(), "late".into()));
    assert_eq!(values(&log), want);
}

#[test]
fn with_a_small_key_map_transactions_resolve_across_passes_to_the_same_result() {
    let fs = SimFs::default();
    fs.clock().set_ms(T0);
    let log = open(&fs, "/small");
    // Each round's transaction ends after the next one began, so two are always open; every
    // fourth one aborts, the last one among them.
    let pid = |round: u32| i64::from(100 + round % 3);
    let commits = |round: u32| round % 4 != 1;
    for round in 0..38 {
        let value = format!("r{round}");
        // Each producer's batches carry the next sequence numbers (two records a batch).
        let seq = (round / 3 * 2) as i32;
        txn_put(
            &log,
            pid(round),
            seq,
            &[("a", Some(&value)), ("b", Some(&value))],
        );
        put(
            &log,
            T0,
            &[(format!("p{}", round % 7), Some(value.clone()))],
            None,
        );
        if round > 0 {
            end_txn(&log, pid(round - 1), commits(round - 1), T0);
        }
    }
    end_txn(&log, pid(37), commits(37), T0);
    roll(&log, fs.clock());
    // Room for 3 entries: the map fills up inside open transactions, whose markers pass 1
    // reads on for.
    let passes = clean_all(&log, 3 * herald_storage::KEY_MAP_ENTRY_BYTES);
    assert!(passes > 3, "{passes} passes");
    let records = read_all(&log);
    let got = latest(&records);
    assert_eq!(got[&b"a"[..]], Some(b"r36".to_vec()));
    assert_eq!(got[&b"b"[..]], Some(b"r36".to_vec()));
    for round in (0..38).filter(|r| !commits(*r)) {
        let aborted = format!("r{round}");
        assert!(
            records.iter().all(|r| r.key.as_deref() != Some(&b"a"[..])
                || r.value.as_deref() != Some(aborted.as_bytes())),
            "{aborted} left"
        );
    }
    assert_eq!(records.len(), 2 + 7, "{records:?}");
}

#[test]
fn an_undecided_transaction_holds_the_cleaner_back_at_its_first_record() {
    let fs = SimFs::default();
    fs.clock().set_ms(T0);
    let log = open(&fs, "/held");
    put(&log, T0, &[("k".into(), Some("v0".into()))], None);
    put(&log, T0, &[("k".into(), Some("v1".into()))], None);
    txn_put(&log, 5, 0, &[("k", Some("open"))]);
    put(&log, T0, &[("j".into(), Some("v2".into()))], None);
    put(&log, T0, &[("j".into(), Some("v3".into()))], None);
    roll(&log, fs.clock());
    let out = log
        .clean(DEFAULT_DEDUPE_BUFFER_BYTES, &Throttle::new(None))
        .unwrap();
    assert!(out.swapped && out.held_back && !out.more, "{out:?}");
    assert_eq!(out.cleaned_to, 2);
    // Only what lies before the undecided transaction was cleaned.
    assert_eq!(
        values(&log),
        pairs(&[("k", "v1"), ("k", "open"), ("j", "v2"), ("j", "v3")])
    );
    // Nothing more can be done until its marker is in a cleanable segment.
    assert!(!log.cleanable().unwrap().due);
    let again = log
        .clean(DEFAULT_DEDUPE_BUFFER_BYTES, &Throttle::new(None))
        .unwrap();
    assert!(!again.swapped && again.held_back, "{again:?}");
    end_txn(&log, 5, false, T0);
    assert!(
        !log.cleanable().unwrap().due,
        "the marker is in the active segment"
    );
    roll(&log, fs.clock());
    assert!(log.cleanable().unwrap().due);
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    assert_eq!(values(&log), pairs(&[("k", "v1"), ("j", "v3")]));
}

#[test]
fn nothing_at_or_above_the_callers_bound_is_cleaned() {
    let fs = SimFs::default();
    fs.clock().set_ms(T0);
    let log = open(&fs, "/bound");
    for v in ["1", "2"] {
        put(&log, T0, &[("k".into(), Some(v.into()))], None);
    }
    roll(&log, fs.clock());
    for v in ["3", "4"] {
        put(&log, T0, &[("k".into(), Some(v.into()))], None);
    }
    roll(&log, fs.clock());
    // A segment is cleaned only wholly below the bound: the second one (offsets 2 and 3)
    // reaches it.
    let bounds = CleanBounds {
        below: 3,
        ..CleanBounds::none()
    };
    let out = once(&log, &bounds);
    assert_eq!(out.cleaned_to, 2);
    assert_eq!(values(&log), pairs(&[("k", "2"), ("k", "3"), ("k", "4")]));
    assert_eq!(log.cleanable_below(3).unwrap().dirty_bytes, 0);
    assert!(log.cleanable().unwrap().due);
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    assert_eq!(values(&log), pairs(&[("k", "4")]));
}

#[test]
fn an_abort_marker_stays_while_listed_and_is_reported_once_its_records_are_gone() {
    let fs = SimFs::default();
    fs.clock().set_ms(T0);
    let log = open(&fs, "/listed");
    txn_put(&log, 7, 0, &[("k", Some("aborted"))]);
    let marker = end_txn(&log, 7, false, T0);
    put(&log, T0, &[("k".into(), Some("v".into()))], None);
    roll(&log, fs.clock());
    let listed = |pid: i64, offset: u64| pid == 7 && offset == marker;
    let bounds = CleanBounds {
        below: u64::MAX,
        abort_listed: &listed,
    };
    let reported = vec![AbortMarker {
        producer_id: 7,
        offset: marker,
    }];
    // The pass that removes the aborted records reports the marker as having none left.
    let out = once(&log, &bounds);
    assert_eq!(out.abort_markers_without_data, reported);
    assert_eq!(values(&log), pairs(&[("k", "v")]));
    assert_eq!(marker_offsets(&log), vec![marker]);

    // Past the horizon it stays while listed, and is reported again.
    fs.clock().advance_ms(10 * HOUR_MS as i64 + 1);
    put(
        &log,
        fs.clock().now_ms(),
        &[("x".into(), Some("1".into()))],
        None,
    );
    roll(&log, fs.clock());
    let out = once(&log, &bounds);
    assert_eq!(out.markers_removed, 0);
    assert_eq!(out.abort_markers_without_data, reported);
    assert_eq!(marker_offsets(&log), vec![marker]);

    // Unlisted, it goes.
    put(
        &log,
        fs.clock().now_ms(),
        &[("x".into(), Some("2".into()))],
        None,
    );
    roll(&log, fs.clock());
    let out = once(&log, &CleanBounds::none());
    assert_eq!(out.markers_removed, 1);
    assert!(out.abort_markers_without_data.is_empty());
    assert_eq!(marker_offsets(&log), Vec::<u64>::new());
    assert_eq!(values(&log), pairs(&[("k", "v"), ("x", "2")]));
}

#[test]
fn a_commit_marker_stays_until_its_records_are_superseded() {
    let fs = SimFs::default();
    fs.clock().set_ms(T0);
    let log = open(&fs, "/commit");
    txn_put(&log, 8, 0, &[("k", Some("committed"))]);
    let marker = end_txn(&log, 8, true, T0);
    roll(&log, fs.clock());
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    fs.clock().advance_ms(10 * HOUR_MS as i64 + 1);
    let now = fs.clock().now_ms();
    put(&log, now, &[("x".into(), Some("1".into()))], None);
    roll(&log, fs.clock());
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    // Past the horizon, but its record is still the latest of its key.
    assert_eq!(marker_offsets(&log), vec![marker]);
    put(&log, now, &[("k".into(), Some("newer".into()))], None);
    roll(&log, fs.clock());
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    // The pass that dropped the superseded record kept the marker: the record was there
    // when it began. The next one drops it.
    assert_eq!(marker_offsets(&log), vec![marker]);
    put(&log, now, &[("y".into(), Some("1".into()))], None);
    roll(&log, fs.clock());
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    assert_eq!(marker_offsets(&log), Vec::<u64>::new());
    assert_eq!(
        values(&log),
        pairs(&[("x", "1"), ("k", "newer"), ("y", "1")])
    );
}

#[test]
fn a_producers_last_batch_stays_emptied_so_its_sequence_numbers_survive_a_rescan() {
    let fs = SimFs::default();
    fs.clock().set_ms(T0);
    let dir = Path::new("/producers");
    let log = open(&fs, "/producers");
    // An idempotent producer (9) whose records are all superseded, and a transactional one
    // (10) whose last transaction aborted.
    log.append(&by_producer(keyed(&[("a", Some("9-0"))]), 9, 0, 0, false))
        .unwrap();
    log.append(&by_producer(keyed(&[("b", Some("9-1"))]), 9, 0, 1, false))
        .unwrap();
    txn_put(&log, 10, 0, &[("c", Some("10-0"))]);
    end_txn(&log, 10, false, T0);
    put(
        &log,
        T0,
        &[
            ("a".into(), Some("z".into())),
            ("b".into(), Some("z".into())),
        ],
        None,
    );
    roll(&log, fs.clock());
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    assert_eq!(values(&log), pairs(&[("a", "z"), ("b", "z")]));
    let emptied: Vec<_> = raw_batches(&log)
        .into_iter()
        .filter(|b| b.records == 0)
        .map(|b| (b.base, b.producer_id))
        .collect();
    assert_eq!(emptied, vec![(1, 9), (2, 10)]);
    log.close().unwrap();
    // Without the recovery checkpoint every segment is scanned, and producer state is rebuilt
    // from the batches alone.
    fs.remove_file(&dir.join("checkpoint")).unwrap();
    let log = open(&fs, "/producers");
    let retry = log
        .append(&by_producer(keyed(&[("b", Some("9-1"))]), 9, 0, 1, false))
        .unwrap();
    assert!(retry.duplicate && retry.base_offset == 1, "{retry:?}");
    assert!(matches!(
        log.append(&by_producer(keyed(&[("b", Some("9-3"))]), 9, 0, 3, false)),
        Err(AppendError::OutOfOrderSequence {
            expected_sequence: 2,
            ..
        })
    ));
    let retry = log
        .append(&by_producer(keyed(&[("c", Some("10-0"))]), 10, 0, 0, true))
        .unwrap();
    assert!(retry.duplicate && retry.base_offset == 2, "{retry:?}");
    // Once the producer writes again, its emptied batch is no longer needed.
    log.append(&by_producer(keyed(&[("b", Some("9-2"))]), 9, 0, 2, false))
        .unwrap();
    roll(&log, fs.clock());
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    let emptied: Vec<_> = raw_batches(&log)
        .into_iter()
        .filter(|b| b.records == 0)
        .map(|b| b.base)
        .collect();
    assert_eq!(emptied, vec![2]);
}

#[test]
fn a_partially_cleaned_batch_is_scanned_after_losing_the_recovery_checkpoint() {
    let fs = SimFs::default();
    fs.clock().set_ms(T0);
    let log = open(&fs, "/partial");
    put(
        &log,
        T0,
        &[
            ("k1".into(), Some("a".into())),
            ("k2".into(), Some("a".into())),
            ("k3".into(), Some("a".into())),
        ],
        None,
    );
    put(&log, T0, &[("k1".into(), Some("b".into()))], None);
    roll(&log, fs.clock());
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    let cleaned = read_all(&log);
    assert_eq!(cleaned.len(), 3);
    assert_eq!(raw_batches(&log)[0].records, 2);
    log.close().unwrap();
    fs.remove_file(Path::new("/partial/checkpoint")).unwrap();
    let log = open(&fs, "/partial");
    assert_eq!(read_all(&log), cleaned);
    assert_eq!(log.offsets().high_watermark, 4);
}

#[test]
fn a_log_cleaned_by_a_cleaner_that_kept_transactions_is_cleaned_again_from_its_start() {
    let fs = SimFs::default();
    fs.clock().set_ms(T0);
    let log = open(&fs, "/v1");
    txn_put(&log, 4, 0, &[("k", Some("aborted"))]);
    end_txn(&log, 4, false, T0);
    put(&log, T0, &[("j".into(), Some("v".into()))], None);
    roll(&log, fs.clock());
    log.close().unwrap();
    // What that cleaner left: every record below 3 through a pass, the aborted one kept.
    let mut checkpoint = Vec::new();
    checkpoint.extend_from_slice(b"HRCL");
    checkpoint.extend_from_slice(&1u16.to_be_bytes());
    checkpoint.extend_from_slice(&0u16.to_be_bytes());
    checkpoint.extend_from_slice(&3u64.to_be_bytes());
    let crc = crc32c::crc32c(&checkpoint);
    checkpoint.extend_from_slice(&crc.to_be_bytes());
    fs.open(Path::new("/v1/cleaner-checkpoint"), true)
        .unwrap()
        .write_all_at(&checkpoint, 0)
        .unwrap();
    let log = open(&fs, "/v1");
    let c = log.cleanable().unwrap();
    assert!(c.due && c.cleaned_to == 0, "{c:?}");
    clean_all(&log, DEFAULT_DEDUPE_BUFFER_BYTES);
    assert_eq!(values(&log), pairs(&[("j", "v")]));
    assert_eq!(log.cleanable().unwrap().cleaned_to, 3);
}
