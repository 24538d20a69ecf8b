//! Unit tests of the transaction coordinator: fencing, the life of a transaction, the last
//! stable offset and the aborted list, and recovery of the durable state.

use super::*;
use crate::config::BrokerConfig;

struct Fixture {
    dir: tempfile::TempDir,
    topics: Topics,
    ids: ProducerIds,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    let topics = Topics::open(&config).unwrap();
    topics.get_or_create("t").unwrap();
    let ids = ProducerIds::open(dir.path()).unwrap();
    Fixture { dir, topics, ids }
}

fn append(f: &Fixture, pid: i64, epoch: i16) {
    let batch = herald_storage::build_batch(1_000, &[], &[b"v"], Some((pid, epoch, 0)));
    let partition = f.topics.get("t").unwrap().partition(0).unwrap();
    // Sequences restart per transaction in this test; the log sees a new epoch or id each time.
    partition.append(&batch).unwrap();
}

#[test]
fn a_second_init_fences_the_first_producer() {
    let f = fixture();
    let txns = Transactions::open(f.dir.path()).unwrap();
    let (pid, epoch) = txns
        .init_producer_id(&f.topics, &f.ids, "app", 60_000, None)
        .unwrap();
    txns.add_partitions(&f.topics, "app", pid, epoch, &[("t".into(), 0)])
        .unwrap();
    let (pid2, epoch2) = txns
        .init_producer_id(&f.topics, &f.ids, "app", 60_000, None)
        .unwrap();
    assert_eq!((pid2, epoch2), (pid, epoch + 1));
    let fenced = txns
        .add_partitions(&f.topics, "app", pid, epoch, &[("t".into(), 0)])
        .unwrap_err();
    assert!(matches!(fenced, TxnError::Fenced { .. }), "{fenced}");
    assert!(matches!(
        txns.check_produce("app", pid, epoch, "t", 0),
        Err(TxnError::Fenced { .. })
    ));
    // The zombie's open transaction was aborted under the new epoch.
    assert_eq!(txns.describe("app").unwrap().state, TxnState::Empty);
    assert_eq!(txns.aborted_between("t", 0, 0, u64::MAX).len(), 1);
}

#[test]
fn open_transactions_hold_the_stable_offset_and_aborts_are_listed() {
    let f = fixture();
    let txns = Transactions::open(f.dir.path()).unwrap();
    let (pid, epoch) = txns
        .init_producer_id(&f.topics, &f.ids, "app", 60_000, None)
        .unwrap();
    append(&f, 99, 0);
    txns.add_partitions(&f.topics, "app", pid, epoch, &[("t".into(), 0)])
        .unwrap();
    assert_eq!(txns.first_unstable("t", 0), Some(1));
    txns.check_produce("app", pid, epoch, "t", 0).unwrap();
    assert!(txns.check_produce("app", pid, epoch, "t", 1).is_err());
    append(&f, pid, epoch);
    let decision = txns.end_prepare("app", pid, epoch, false).unwrap().unwrap();
    assert!(!decision.commit);
    assert_eq!(
        txns.first_unstable("t", 0),
        Some(1),
        "still open until the markers"
    );
    txns.finish(&f.topics, "app", false).unwrap();
    assert_eq!(txns.first_unstable("t", 0), None);
    let aborted = txns.aborted_between("t", 0, 0, 10);
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].producer_id, pid);
    assert_eq!((aborted[0].first_offset, aborted[0].last_offset), (1, 2));
    // A retried EndTxn is answered without doing anything again.
    assert!(
        txns.end_prepare("app", pid, epoch, false)
            .unwrap()
            .is_none()
    );
    // A commit where an abort was done is refused.
    assert!(txns.end_prepare("app", pid, epoch, true).is_err());
}

#[test]
fn state_survives_reopen_and_a_decided_transaction_is_finished_after_it() {
    let f = fixture();
    let txns = Transactions::open(f.dir.path()).unwrap();
    let (pid, epoch) = txns
        .init_producer_id(&f.topics, &f.ids, "app", 60_000, None)
        .unwrap();
    txns.add_partitions(&f.topics, "app", pid, epoch, &[("t".into(), 0)])
        .unwrap();
    txns.add_offsets("app", pid, epoch, "g").unwrap();
    txns.offset_commit(
        "app",
        pid,
        epoch,
        vec![TxnOffset {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            offset: 5,
            leader_epoch: 2,
            metadata: String::new(),
        }],
    )
    .unwrap();
    txns.end_prepare("app", pid, epoch, true).unwrap().unwrap();
    drop(txns);
    // A crash after the decision: the reopened coordinator knows what to finish, with the
    // offsets to commit.
    let txns = Transactions::open(f.dir.path()).unwrap();
    let due = txns.due(&f.ids);
    assert_eq!(due.len(), 1);
    assert!(due[0].commit);
    assert_eq!(due[0].offsets.len(), 1);
    // The consumer's leader epoch is kept with the offset (KIP-320: OffsetFetch returns it).
    assert_eq!(due[0].offsets[0].leader_epoch, 2);
    txns.finish(&f.topics, "app", true).unwrap();
    assert_eq!(
        txns.describe("app").unwrap().state,
        TxnState::CompleteCommit
    );
    assert!(txns.due(&f.ids).is_empty());
    let listed = txns.list(&["CompleteCommit".into()], &[]);
    assert_eq!(listed.len(), 1);
    assert!(txns.list(&["Ongoing".into()], &[]).is_empty());
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_with_a_new_epoch() {
    let f = fixture();
    let txns = Transactions::open(f.dir.path()).unwrap();
    let (pid, epoch) = txns
        .init_producer_id(&f.topics, &f.ids, "app", 1, None)
        .unwrap();
    txns.add_partitions(&f.topics, "app", pid, epoch, &[("t".into(), 0)])
        .unwrap();
    // Deadline-bounded wait for the clock to pass the 1 ms timeout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let due = loop {
        let due = txns.due(&f.ids);
        if !due.is_empty() || std::time::Instant::now() > deadline {
            break due;
        }
        std::thread::yield_now();
    };
    assert_eq!(due.len(), 1);
    assert!(!due[0].commit);
    txns.finish(&f.topics, "app", false).unwrap();
    let txn = txns.describe("app").unwrap();
    assert_eq!(txn.state, TxnState::CompleteAbort);
    assert_eq!(txn.producer_epoch, epoch + 1);
    assert!(matches!(
        txns.end_prepare("app", pid, epoch, true),
        Err(TxnError::Fenced { .. })
    ));
}

#[test]
fn bad_timeouts_and_unknown_partitions_are_refused() {
    let f = fixture();
    let txns = Transactions::open(f.dir.path()).unwrap();
    assert!(matches!(
        txns.init_producer_id(&f.topics, &f.ids, "app", 0, None),
        Err(TxnError::InvalidTimeout { .. })
    ));
    let (pid, epoch) = txns
        .init_producer_id(&f.topics, &f.ids, "app", 1_000, None)
        .unwrap();
    assert_eq!(
        txns.add_partitions(&f.topics, "app", pid, epoch, &[("nope".into(), 0)]),
        Err(TxnError::UnknownPartition)
    );
    assert!(matches!(
        txns.add_partitions(&f.topics, "app", pid + 1, epoch, &[("t".into(), 0)]),
        Err(TxnError::ProducerIdMapping { .. })
    ));
}

/// Aborts one transaction of a fresh producer on `t`-0 and returns (producer id, marker offset).
fn abort_one(f: &Fixture, txns: &Transactions, id: &str) -> (i64, u64) {
    let (pid, epoch) = txns
        .init_producer_id(&f.topics, &f.ids, id, 60_000, None)
        .unwrap();
    txns.add_partitions(&f.topics, id, pid, epoch, &[("t".into(), 0)])
        .unwrap();
    append(f, pid, epoch);
    txns.end_prepare(id, pid, epoch, false).unwrap().unwrap();
    txns.finish(&f.topics, id, false).unwrap();
    let ranges = txns.aborted_between("t", 0, 0, u64::MAX);
    let range = ranges.iter().find(|r| r.producer_id == pid).unwrap();
    (pid, range.last_offset)
}

#[test]
fn aborted_transactions_the_cleaner_left_without_records_are_no_longer_listed() {
    let f = fixture();
    let txns = Transactions::open(f.dir.path()).unwrap();
    let (a, marker_a) = abort_one(&f, &txns, "a");
    let (b, marker_b) = abort_one(&f, &txns, "b");
    let listed = txns.listed_abort_markers("t", 0);
    assert!(listed.contains(&(a, marker_a)) && listed.contains(&(b, marker_b)));
    let gone = [herald_storage::AbortMarker {
        producer_id: a,
        offset: marker_a,
    }];
    txns.forget_aborted("t", 0, 0, &gone).unwrap();
    let left = |txns: &Transactions| {
        txns.aborted_between("t", 0, 0, u64::MAX)
            .iter()
            .map(|r| r.producer_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(left(&txns), vec![b]);
    // The change was durable before it took effect.
    drop(txns);
    let txns = Transactions::open(f.dir.path()).unwrap();
    assert_eq!(left(&txns), vec![b]);
    assert_eq!(
        txns.listed_abort_markers("t", 0),
        [(b, marker_b)].into_iter().collect()
    );
}

#[test]
fn aborted_transactions_below_the_log_start_or_of_deleted_partitions_are_pruned() {
    let f = fixture();
    f.topics.get_or_create("u").unwrap();
    let txns = Transactions::open(f.dir.path()).unwrap();
    let (first, first_marker) = abort_one(&f, &txns, "a");
    let (second, _) = abort_one(&f, &txns, "b");
    // A range on another topic, which is then deleted.
    let (pid, epoch) = txns
        .init_producer_id(&f.topics, &f.ids, "c", 60_000, None)
        .unwrap();
    txns.add_partitions(&f.topics, "c", pid, epoch, &[("u".into(), 0)])
        .unwrap();
    txns.end_prepare("c", pid, epoch, false).unwrap().unwrap();
    txns.finish(&f.topics, "c", false).unwrap();
    assert_eq!(txns.aborted_between("u", 0, 0, u64::MAX).len(), 1);
    f.topics.delete("u").unwrap();

    // Nothing is below the log start yet.
    txns.prune_aborted(&f.topics).unwrap();
    assert_eq!(txns.aborted_between("t", 0, 0, u64::MAX).len(), 2);
    assert!(txns.aborted_between("u", 0, 0, u64::MAX).is_empty());
    let partition = f.topics.get("t").unwrap().partition(0).unwrap();
    partition
        .log
        .delete_records_before(first_marker + 1)
        .unwrap();
    txns.prune_aborted(&f.topics).unwrap();
    let left: Vec<_> = txns
        .aborted_between("t", 0, 0, u64::MAX)
        .iter()
        .map(|r| r.producer_id)
        .collect();
    assert_eq!(left, vec![second]);
    assert_ne!(first, second);
    drop(txns);
    let txns = Transactions::open(f.dir.path()).unwrap();
    assert_eq!(txns.aborted_between("t", 0, 0, u64::MAX).len(), 1);
}

#[test]
fn a_transaction_fenced_on_its_last_epoch_is_aborted_under_its_own_producer_id() {
    let f = fixture();
    let txns = Transactions::open(f.dir.path()).unwrap();
    let (pid, _) = txns
        .init_producer_id(&f.topics, &f.ids, "app", 60_000, None)
        .unwrap();
    // The highest epoch a producer is given.
    let epoch = i16::MAX - 1;
    txns.inner
        .lock()
        .txns
        .get_mut("app")
        .unwrap()
        .producer_epoch = epoch;
    txns.add_partitions(&f.topics, "app", pid, epoch, &[("t".into(), 0)])
        .unwrap();
    append(&f, pid, epoch);
    let (new_pid, new_epoch) = txns
        .init_producer_id(&f.topics, &f.ids, "app", 60_000, None)
        .unwrap();
    // The abort marker carries the records' producer id, with the spare last epoch; the new
    // producer gets a new id.
    let aborted = txns.aborted_between("t", 0, 0, u64::MAX);
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].producer_id, pid);
    let partition = f.topics.get("t").unwrap().partition(0).unwrap();
    let read = partition
        .log
        .read(aborted[0].last_offset, 1 << 20, true)
        .unwrap();
    let marker_pid = i64::from_be_bytes(read.batches[43..51].try_into().unwrap());
    let marker_epoch = i16::from_be_bytes(read.batches[51..53].try_into().unwrap());
    assert_eq!((marker_pid, marker_epoch), (pid, i16::MAX));
    assert_ne!(new_pid, pid);
    assert_eq!(new_epoch, 0);
}
