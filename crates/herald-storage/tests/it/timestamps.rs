//! `offset_for_timestamp`: exact record lookup across batches and segments.

use std::path::Path;

use herald_storage::{LogConfig, PartitionLog, SimFs, build_batch};

use crate::support::small;

#[test]
fn finds_the_first_record_at_or_after_a_timestamp_across_segments() {
    let fs = SimFs::default();
    let log = PartitionLog::open_with(Path::new("/p"), small(1024), fs.env()).unwrap();
    // Batch i holds records with timestamps 1000*i + {0, 30, 10} (not monotonic inside a batch).
    let mut all = Vec::new();
    for i in 0..40i64 {
        let b = build_batch(1000 * i, &[0, 30, 10], &[b"a", b"b", b"c"], None);
        let info = log.append(&b).unwrap();
        for (k, d) in [0, 30, 10].iter().enumerate() {
            all.push((info.base_offset + k as u64, 1000 * i + d));
        }
    }
    let expected = |ts: i64| all.iter().find(|(_, t)| *t >= ts).copied();
    for ts in [
        -5, 0, 1, 10, 11, 30, 31, 5_000, 5_015, 5_030, 39_030, 39_031, 100_000,
    ] {
        assert_eq!(
            log.offset_for_timestamp(ts).unwrap(),
            expected(ts),
            "ts {ts}"
        );
    }
    // Closed segments answer from their index files after a reopen too.
    log.close().unwrap();
    let log = PartitionLog::open_with(Path::new("/p"), small(1024), fs.env()).unwrap();
    for ts in (0..41_000).step_by(997) {
        assert_eq!(
            log.offset_for_timestamp(ts).unwrap(),
            expected(ts),
            "ts {ts}"
        );
    }
    // Records below the log start are not answers.
    log.delete_records_before(61).unwrap();
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((61, 20_030)));
}

#[test]
fn an_empty_log_has_no_offset_for_any_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
}

#[test]
fn a_lost_time_index_of_a_closed_segment_is_rebuilt_on_open() {
    let fs = SimFs::default();
    let log = PartitionLog::open_with(Path::new("/p"), small(1024), fs.env()).unwrap();
    for i in 0..30i64 {
        log.append(&build_batch(1000 * i, &[0, 5], &[b"a", b"b"], None))
            .unwrap();
    }
    log.close().unwrap();
    let first = Path::new("/p/00000000000000000000.timeindex");
    assert!(!fs.contents(first).unwrap().is_empty());
    fs.write_file(first, &[]);
    let log = PartitionLog::open_with(Path::new("/p"), small(1024), fs.env()).unwrap();
    assert_eq!(log.offset_for_timestamp(1).unwrap(), Some((1, 5)));
    assert_eq!(log.offset_for_timestamp(2_000).unwrap(), Some((4, 2_000)));
}
