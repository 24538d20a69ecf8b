//! The transaction coordinator: transactional ids and their producer ids and epochs (fencing
//! zombies), the partitions and consumer groups each open transaction touches, the markers that
//! end it, and what read_committed consumers need from it (the last stable offset and the
//! aborted transactions of each partition).
//!
//! The state is durable before a client is answered: every change that a crash must not take
//! back is written to `transactions.json` in the data directory (temporary file, fsync, rename,
//! fsync of the directory) while the coordinator's lock is held. Ending a transaction takes
//! three steps, each recorded: the decision (`PrepareCommit` or `PrepareAbort`, with the
//! transaction's partitions and pending offsets), the markers written to every partition and
//! fsynced (and the offsets committed), then the completion. A broker that stops between them
//! finishes the decided transaction when it starts again; an `Ongoing` one is aborted when its
//! `transaction.timeout.ms` passes or when its producer calls InitProducerId again.
//!
//! The last stable offset of a partition is the lowest first offset among the open
//! transactions on it. The first offset recorded for a transaction on a partition is the log
//! end when the partition joined the transaction, a lower bound of its first record: a
//! read_committed consumer may wait a little longer for other producers' records, never less.

mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::producer_ids::ProducerIds;
use crate::topics::{Partition, Topics};

/// Longest `transaction.timeout.ms` a producer may ask for (Kafka's
/// `transaction.max.timeout.ms` default, 15 minutes).
pub(crate) const TRANSACTION_TIMEOUT_MS_MAX: i32 = 900_000;
/// Transactional ids the coordinator keeps; InitProducerId for a new one past this is refused.
pub(crate) const TRANSACTIONAL_IDS_MAX: usize = 100_000;
/// Partitions one transaction may write to.
pub(crate) const PARTITIONS_PER_TRANSACTION_MAX: usize = 10_000;
/// Consumer groups one transaction may commit offsets for, and offsets per transaction.
pub(crate) const OFFSETS_PER_TRANSACTION_MAX: usize = 10_000;
/// Aborted transactions remembered per partition for read_committed fetches; the oldest are
/// dropped past it (a consumer reading that far back could then see an aborted record).
pub(crate) const ABORTED_PER_PARTITION_MAX: usize = 10_000;

/// Where a transactional id's current transaction stands (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// The name Kafka's DescribeTransactions and ListTransactions use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// Whether records of the transaction may still be in partitions without their marker.
    fn open(self) -> bool {
        matches!(
            self,
            TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
        )
    }
}

/// One partition a transaction writes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TxnPartition {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// The log end when the partition joined the transaction.
    pub(crate) first_offset: u64,
}

/// An offset committed inside a transaction, applied when it commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TxnOffset {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// The leader epoch the consumer saw at `offset` (KIP-320), -1 when unknown; files written
    /// before it was kept have none.
    #[serde(default = "no_leader_epoch")]
    pub(crate) leader_epoch: i32,
    pub(crate) metadata: String,
}

fn no_leader_epoch() -> i32 {
    -1
}

/// A transactional id and its current transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Txn {
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    pub(crate) state: TxnState,
    pub(crate) timeout_ms: i32,
    /// When the current transaction began (ms since the Unix epoch), -1 if none has.
    pub(crate) started_ms: i64,
    pub(crate) partitions: Vec<TxnPartition>,
    pub(crate) groups: BTreeSet<String>,
    pub(crate) offsets: Vec<TxnOffset>,
}

/// An aborted transaction's range on one partition, for read_committed consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AbortedTxn {
    pub(crate) producer_id: i64,
    pub(crate) first_offset: u64,
    /// Offset of the abort marker.
    pub(crate) last_offset: u64,
}

/// Why a transactional request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TxnError {
    /// A newer producer with the same transactional id took over (or the transaction timed
    /// out and was aborted with a new epoch).
    #[error("producer epoch {given} is not the current epoch {current} of this transactional id")]
    Fenced { given: i16, current: i16 },
    /// The producer id is not the one the transactional id has.
    #[error("producer id {given} is not the one of this transactional id")]
    ProducerIdMapping { given: i64 },
    /// The request does not fit the transaction's state.
    #[error("not allowed while the transaction is {state}: {why}")]
    InvalidState {
        state: &'static str,
        why: &'static str,
    },
    /// The previous transaction is still being completed; the client retries.
    #[error("the previous transaction of this transactional id is still completing")]
    Concurrent,
    /// `transaction.timeout.ms` is out of range.
    #[error("transaction.timeout.ms {given} is outside 1..={max}")]
    InvalidTimeout { given: i32, max: i32 },
    /// A limit on the coordinator's size is reached.
    #[error("{what} is reached ({limit})")]
    Limit { what: &'static str, limit: usize },
    /// The partition does not exist.
    #[error("unknown topic or partition")]
    UnknownPartition,
    /// The state or a marker could not be written.
    #[error("{0}")]
    Storage(String),
}

/// In-memory state, mirrored by the durable file.
#[derive(Default)]
struct Inner {
    txns: BTreeMap<String, Txn>,
    aborted: HashMap<(String, i32), Vec<AbortedTxn>>,
    /// First offsets of the open transactions per partition, by producer id.
    open: HashMap<(String, i32), HashMap<i64, u64>>,
    /// Set after a failed write: the file is no longer known to match memory, so nothing more
    /// is acknowledged until the broker restarts and reads it again.
    broken: bool,
    /// Decided transactions someone is finishing now (an EndTxn, an InitProducerId that aborts,
    /// or the timer), so no other starts on the same one and its markers are written once.
    finishing: std::collections::HashSet<String>,
}

impl Inner {
    fn reindex(&mut self, id: &str) {
        // Rebuilt from the transaction's partitions: cheap next to the fsync that follows.
        let Some(txn) = self.txns.get(id) else {
            return;
        };
        let pid = txn.producer_id;
        for entries in self.open.values_mut() {
            entries.remove(&pid);
        }
        if txn.state.open() {
            for p in &txn.partitions {
                self.open
                    .entry((p.topic.clone(), p.partition))
                    .or_default()
                    .insert(pid, p.first_offset);
            }
        }
        self.open.retain(|_, entries| !entries.is_empty());
    }
}

/// What [`Transactions::end_prepare`] decided, for the caller to carry out.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    pub(crate) transactional_id: String,
    pub(crate) commit: bool,
    pub(crate) offsets: Vec<TxnOffset>,
}

/// A transactional id as ListTransactions shows it.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub(crate) transactional_id: String,
    pub(crate) producer_id: i64,
    pub(crate) state: TxnState,
    pub(crate) started_ms: i64,
}

/// The transaction coordinator of this broker.
pub(crate) struct Transactions {
    dir: std::path::PathBuf,
    inner: Mutex<Inner>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Transactions {
    /// Loads the durable state from `dir` (empty if there is none yet).
    pub(crate) fn open(dir: &Path) -> Result<Transactions, TxnError> {
        let snapshot = store::load(dir)?;
        let mut inner = Inner {
            txns: snapshot.transactions,
            ..Inner::default()
        };
        for entry in snapshot.aborted {
            inner
                .aborted
                .entry((entry.topic, entry.partition))
                .or_default()
                .push(entry.range);
        }
        let ids: Vec<String> = inner.txns.keys().cloned().collect();
        for id in &ids {
            inner.reindex(id);
        }
        let open = inner.txns.values().filter(|txn| txn.state.open()).count();
        if open > 0 {
            info!(
                open,
                "transactions open at the last stop: decided ones are completed, the others abort at their timeout"
            );
        }
        Ok(Transactions {
            dir: dir.to_path_buf(),
            inner: Mutex::new(inner),
        })
    }

    fn persist(&self, inner: &mut Inner) -> Result<(), TxnError> {
        if inner.broken {
            return Err(TxnError::Storage(
                "an earlier write of the transaction state failed; restart the broker".into(),
            ));
        }
        let aborted = inner
            .aborted
            .iter()
            .flat_map(|((topic, partition), ranges)| {
                ranges.iter().map(|range| store::AbortedEntry {
                    topic: topic.clone(),
                    partition: *partition,
                    range: *range,
                })
            })
            .collect();
        let snapshot = store::Snapshot {
            transactions: inner.txns.clone(),
            aborted,
        };
        store::save(&self.dir, &snapshot).inspect_err(|_| inner.broken = true)
    }

    /// Checks that `producer_id`/`producer_epoch` are the current ones of `txn`.
    fn owns(txn: &Txn, producer_id: i64, producer_epoch: i16) -> Result<(), TxnError> {
        if txn.producer_id != producer_id {
            return Err(TxnError::ProducerIdMapping { given: producer_id });
        }
        if txn.producer_epoch != producer_epoch {
            return Err(TxnError::Fenced {
                given: producer_epoch,
                current: txn.producer_epoch,
            });
        }
        Ok(())
    }

    /// InitProducerId with a transactional id: a new producer id for a new id, else the next
    /// epoch of the current one, which fences every older producer. A transaction left open
    /// by the previous producer is aborted first.
    pub(crate) fn init_producer_id(
        &self,
        topics: &Topics,
        producer_ids: &ProducerIds,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TxnError> {
        if !(1..=TRANSACTION_TIMEOUT_MS_MAX).contains(&timeout_ms) {
            return Err(TxnError::InvalidTimeout {
                given: timeout_ms,
                max: TRANSACTION_TIMEOUT_MS_MAX,
            });
        }
        let mut inner = self.inner.lock();
        let allocate = || {
            producer_ids
                .allocate()
                .map_err(|error| TxnError::Storage(error.to_string()))
        };
        let Some(txn) = inner.txns.get(transactional_id).cloned() else {
            if inner.txns.len() >= TRANSACTIONAL_IDS_MAX {
                return Err(TxnError::Limit {
                    what: "the number of transactional ids",
                    limit: TRANSACTIONAL_IDS_MAX,
                });
            }
            let txn = Txn {
                producer_id: allocate()?,
                producer_epoch: 0,
                state: TxnState::Empty,
                timeout_ms,
                started_ms: -1,
                partitions: Vec::new(),
                groups: BTreeSet::new(),
                offsets: Vec::new(),
            };
            let answer = (txn.producer_id, txn.producer_epoch);
            inner.txns.insert(transactional_id.to_string(), txn);
            self.persist(&mut inner)?;
            return Ok(answer);
        };
        // KIP-360: a producer that names its id and epoch must be the current one.
        if let Some((pid, epoch)) = expected.filter(|(pid, _)| *pid >= 0) {
            if pid != txn.producer_id || epoch != txn.producer_epoch {
                return Err(TxnError::Fenced {
                    given: epoch,
                    current: txn.producer_epoch,
                });
            }
        }
        match txn.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                // The decided transaction is being finished (by its EndTxn or the
                // coordinator's timer); the client retries.
                return Err(TxnError::Concurrent);
            }
            TxnState::Ongoing => {
                // The zombie's transaction is aborted under the new epoch, so its markers
                // already fence it on every partition.
                if inner.finishing.contains(transactional_id) {
                    return Err(TxnError::Concurrent);
                }
                self.fence_epoch(&mut inner, transactional_id, allocate)?;
                if let Some(txn) = inner.txns.get_mut(transactional_id) {
                    txn.state = TxnState::PrepareAbort;
                }
                inner.reindex(transactional_id);
                self.persist(&mut inner)?;
                inner.finishing.insert(transactional_id.to_string());
                drop(inner);
                self.finish(topics, transactional_id, false)?;
                inner = self.inner.lock();
                // The abort may have taken the last epoch: the new producer gets a new id.
                let exhausted = inner
                    .txns
                    .get(transactional_id)
                    .is_some_and(|txn| txn.producer_epoch >= i16::MAX - 1);
                if exhausted {
                    self.bump_epoch(&mut inner, transactional_id, allocate)?;
                }
            }
            _ => {
                self.bump_epoch(&mut inner, transactional_id, allocate)?;
            }
        }
        let Some(txn) = inner.txns.get_mut(transactional_id) else {
            return Err(TxnError::Concurrent);
        };
        txn.timeout_ms = timeout_ms;
        txn.state = TxnState::Empty;
        txn.started_ms = -1;
        txn.partitions.clear();
        txn.groups.clear();
        txn.offsets.clear();
        let answer = (txn.producer_id, txn.producer_epoch);
        inner.reindex(transactional_id);
        self.persist(&mut inner)?;
        Ok(answer)
    }

    /// The next epoch under the same producer id, to abort an open transaction: its markers
    /// must carry the producer id of its records (a consumer and the log cleaner match them by
    /// it). The epochs handed to producers stop below `i16::MAX` (see [`Self::bump_epoch`]),
    /// which leaves this one spare; only if it is taken already does the id change.
    fn fence_epoch(
        &self,
        inner: &mut Inner,
        transactional_id: &str,
        allocate: impl FnOnce() -> Result<i64, TxnError>,
    ) -> Result<(), TxnError> {
        let Some(txn) = inner.txns.get_mut(transactional_id) else {
            return Ok(());
        };
        if txn.producer_epoch < i16::MAX {
            txn.producer_epoch += 1;
            return Ok(());
        }
        self.bump_epoch(inner, transactional_id, allocate)
    }

    /// The next epoch, or a new producer id at epoch 0 when the epochs run out.
    fn bump_epoch(
        &self,
        inner: &mut Inner,
        transactional_id: &str,
        allocate: impl FnOnce() -> Result<i64, TxnError>,
    ) -> Result<(), TxnError> {
        let Some(txn) = inner.txns.get(transactional_id) else {
            return Ok(());
        };
        let (pid, epoch) = if txn.producer_epoch >= i16::MAX - 1 {
            (allocate()?, 0)
        } else {
            (txn.producer_id, txn.producer_epoch + 1)
        };
        let old_pid = txn.producer_id;
        if let Some(txn) = inner.txns.get_mut(transactional_id) {
            txn.producer_id = pid;
            txn.producer_epoch = epoch;
        }
        if old_pid != pid {
            for entries in inner.open.values_mut() {
                entries.remove(&old_pid);
            }
        }
        Ok(())
    }

    /// Starts a transaction if none is open, after the checks every adding request makes.
    fn begin<'a>(
        inner: &'a mut Inner,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<&'a mut Txn, TxnError> {
        let txn = inner
            .txns
            .get_mut(transactional_id)
            .ok_or(TxnError::ProducerIdMapping { given: producer_id })?;
        Self::owns(txn, producer_id, producer_epoch)?;
        match txn.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => Err(TxnError::Concurrent),
            TxnState::Ongoing => Ok(txn),
            _ => {
                txn.state = TxnState::Ongoing;
                txn.started_ms = now_ms();
                txn.partitions.clear();
                txn.groups.clear();
                txn.offsets.clear();
                Ok(txn)
            }
        }
    }

    /// AddPartitionsToTxn: all the partitions join the transaction, or none does (an unknown
    /// partition fails the request). Returns once the change is durable.
    pub(crate) fn add_partitions(
        &self,
        topics: &Topics,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), TxnError> {
        let mut resolved = Vec::with_capacity(partitions.len());
        for (topic, index) in partitions {
            let partition = topics
                .get(topic)
                .and_then(|t| t.partition(*index))
                .ok_or(TxnError::UnknownPartition)?;
            resolved.push((topic.clone(), *index, partition));
        }
        let mut inner = self.inner.lock();
        let txn = Self::begin(&mut inner, transactional_id, producer_id, producer_epoch)?;
        let mut changed = txn.started_ms >= 0 && txn.partitions.is_empty();
        for (topic, index, partition) in resolved {
            if txn
                .partitions
                .iter()
                .any(|p| p.topic == topic && p.partition == index)
            {
                continue;
            }
            if txn.partitions.len() >= PARTITIONS_PER_TRANSACTION_MAX {
                return Err(TxnError::Limit {
                    what: "the partitions of one transaction",
                    limit: PARTITIONS_PER_TRANSACTION_MAX,
                });
            }
            txn.partitions.push(TxnPartition {
                topic,
                partition: index,
                first_offset: partition.log.offsets().high_watermark,
            });
            changed = true;
        }
        if changed {
            inner.reindex(transactional_id);
            self.persist(&mut inner)?;
        }
        Ok(())
    }

    /// AddOffsetsToTxn: the group's offsets will be committed with the transaction.
    pub(crate) fn add_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
    ) -> Result<(), TxnError> {
        let mut inner = self.inner.lock();
        let txn = Self::begin(&mut inner, transactional_id, producer_id, producer_epoch)?;
        if !txn.groups.contains(group) {
            if txn.groups.len() >= OFFSETS_PER_TRANSACTION_MAX {
                return Err(TxnError::Limit {
                    what: "the consumer groups of one transaction",
                    limit: OFFSETS_PER_TRANSACTION_MAX,
                });
            }
            txn.groups.insert(group.to_string());
        }
        self.persist(&mut inner)
    }

    /// TxnOffsetCommit: offsets held with the transaction until it ends (written at commit,
    /// dropped at abort). Needs no write of its own: they become durable with the decision.
    pub(crate) fn offset_commit(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        offsets: Vec<TxnOffset>,
    ) -> Result<(), TxnError> {
        let mut inner = self.inner.lock();
        let txn = inner
            .txns
            .get_mut(transactional_id)
            .ok_or(TxnError::ProducerIdMapping { given: producer_id })?;
        Self::owns(txn, producer_id, producer_epoch)?;
        if txn.state != TxnState::Ongoing {
            return Err(TxnError::InvalidState {
                state: txn.state.name(),
                why: "TxnOffsetCommit needs an ongoing transaction",
            });
        }
        for offset in offsets {
            if !txn.groups.contains(&offset.group) {
                return Err(TxnError::InvalidState {
                    state: txn.state.name(),
                    why: "the group was not added with AddOffsetsToTxn",
                });
            }
            txn.offsets.retain(|o| {
                !(o.group == offset.group
                    && o.topic == offset.topic
                    && o.partition == offset.partition)
            });
            if txn.offsets.len() >= OFFSETS_PER_TRANSACTION_MAX {
                return Err(TxnError::Limit {
                    what: "the offsets of one transaction",
                    limit: OFFSETS_PER_TRANSACTION_MAX,
                });
            }
            txn.offsets.push(offset);
        }
        Ok(())
    }

    /// Whether a transactional producer may append to this partition: it holds the current
    /// epoch and the partition is in its ongoing transaction.
    pub(crate) fn check_produce(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), TxnError> {
        let inner = self.inner.lock();
        let txn = inner
            .txns
            .get(transactional_id)
            .ok_or(TxnError::ProducerIdMapping { given: producer_id })?;
        Self::owns(txn, producer_id, producer_epoch)?;
        let added = txn.state == TxnState::Ongoing
            && txn
                .partitions
                .iter()
                .any(|p| p.topic == topic && p.partition == partition);
        if !added {
            return Err(TxnError::InvalidState {
                state: txn.state.name(),
                why: "the partition was not added to the transaction",
            });
        }
        Ok(())
    }

    /// EndTxn's first step: records the decision durably. A retry of an EndTxn already
    /// carried out returns `None`.
    pub(crate) fn end_prepare(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<Option<Decision>, TxnError> {
        let mut inner = self.inner.lock();
        let txn = inner
            .txns
            .get_mut(transactional_id)
            .ok_or(TxnError::ProducerIdMapping { given: producer_id })?;
        Self::owns(txn, producer_id, producer_epoch)?;
        match (txn.state, commit) {
            (TxnState::Ongoing, _) => {}
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                return Ok(None);
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                // A retry after a failed marker write: carry it out again, unless the timer
                // already is.
                if !inner.finishing.insert(transactional_id.to_string()) {
                    return Err(TxnError::Concurrent);
                }
                let Some(txn) = inner.txns.get(transactional_id) else {
                    return Err(TxnError::Concurrent);
                };
                return Ok(Some(Decision {
                    transactional_id: transactional_id.to_string(),
                    commit,
                    offsets: txn.offsets.clone(),
                }));
            }
            (TxnState::PrepareCommit | TxnState::PrepareAbort, _) => {
                return Err(TxnError::Concurrent);
            }
            (state, _) => {
                return Err(TxnError::InvalidState {
                    state: state.name(),
                    why: if commit {
                        "there is no transaction to commit"
                    } else {
                        "there is no transaction to abort"
                    },
                });
            }
        }
        txn.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        let decision = Decision {
            transactional_id: transactional_id.to_string(),
            commit,
            offsets: if commit {
                txn.offsets.clone()
            } else {
                Vec::new()
            },
        };
        self.persist(&mut inner)?;
        inner.finishing.insert(transactional_id.to_string());
        Ok(Some(decision))
    }

    /// EndTxn's last step (after the offsets of a commit are written): writes the marker to
    /// every partition of the transaction, fsyncs them, and records the completion.
    pub(crate) fn finish(
        &self,
        topics: &Topics,
        transactional_id: &str,
        commit: bool,
    ) -> Result<(), TxnError> {
        let result = self.finish_claimed(topics, transactional_id, commit);
        self.release(transactional_id);
        result
    }

    /// Lets another finisher take the transaction (after [`finish`](Self::finish), or when
    /// the offsets of a commit could not be written and the timer is to try again).
    pub(crate) fn release(&self, transactional_id: &str) {
        self.inner.lock().finishing.remove(transactional_id);
    }

    fn finish_claimed(
        &self,
        topics: &Topics,
        transactional_id: &str,
        commit: bool,
    ) -> Result<(), TxnError> {
        let (txn, partitions) = {
            let inner = self.inner.lock();
            let Some(txn) = inner.txns.get(transactional_id).cloned() else {
                return Ok(());
            };
            let wanted = if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            };
            if txn.state != wanted {
                return Ok(());
            }
            let partitions = txn.partitions.clone();
            (txn, partitions)
        };
        let mut aborted = Vec::new();
        for p in &partitions {
            // A partition deleted since needs no marker.
            let Some(partition) = topics.get(&p.topic).and_then(|t| t.partition(p.partition))
            else {
                continue;
            };
            let marker_offset = write_marker(&partition, txn.producer_id, txn.producer_epoch, commit)
                .map_err(|error| {
                    warn!(topic = %p.topic, partition = p.partition, %error, "cannot write a transaction marker");
                    TxnError::Storage(format!(
                        "cannot write the transaction marker to {}-{}: {error}",
                        p.topic, p.partition
                    ))
                })?;
            if !commit {
                aborted.push((p.clone(), marker_offset));
            }
        }
        let mut inner = self.inner.lock();
        for (p, last_offset) in aborted {
            let ranges = inner.aborted.entry((p.topic, p.partition)).or_default();
            ranges.push(AbortedTxn {
                producer_id: txn.producer_id,
                first_offset: p.first_offset,
                last_offset,
            });
            if ranges.len() > ABORTED_PER_PARTITION_MAX {
                let excess = ranges.len() - ABORTED_PER_PARTITION_MAX;
                ranges.drain(..excess);
            }
        }
        if let Some(current) = inner.txns.get_mut(transactional_id) {
            current.state = if commit {
                TxnState::CompleteCommit
            } else {
                TxnState::CompleteAbort
            };
            current.offsets.clear();
        }
        inner.reindex(transactional_id);
        self.persist(&mut inner)
    }

    /// Transactions to act on now: decided ones to finish (after a failure or a restart) and
    /// ongoing ones past their timeout, which are aborted with a new epoch so their producer
    /// is fenced.
    pub(crate) fn due(&self, producer_ids: &ProducerIds) -> Vec<Decision> {
        let now = now_ms();
        let mut inner = self.inner.lock();
        let mut due = Vec::new();
        let ids: Vec<String> = inner.txns.keys().cloned().collect();
        let mut expired = false;
        for id in ids {
            if inner.finishing.contains(&id) {
                continue;
            }
            let Some(txn) = inner.txns.get(&id) else {
                continue;
            };
            match txn.state {
                TxnState::PrepareCommit => due.push(Decision {
                    transactional_id: id,
                    commit: true,
                    offsets: txn.offsets.clone(),
                }),
                TxnState::PrepareAbort => due.push(Decision {
                    transactional_id: id,
                    commit: false,
                    offsets: Vec::new(),
                }),
                TxnState::Ongoing
                    if now.saturating_sub(txn.started_ms) > i64::from(txn.timeout_ms) =>
                {
                    info!(transactional_id = %id, timeout_ms = txn.timeout_ms, "transaction timed out; aborting it");
                    let allocate = || {
                        producer_ids
                            .allocate()
                            .map_err(|error| TxnError::Storage(error.to_string()))
                    };
                    if self.fence_epoch(&mut inner, &id, allocate).is_err() {
                        continue;
                    }
                    if let Some(txn) = inner.txns.get_mut(&id) {
                        txn.state = TxnState::PrepareAbort;
                    }
                    inner.reindex(&id);
                    expired = true;
                    due.push(Decision {
                        transactional_id: id,
                        commit: false,
                        offsets: Vec::new(),
                    });
                }
                _ => {}
            }
        }
        if expired && self.persist(&mut inner).is_err() {
            // Nothing is acted on that is not durable; the next pass tries again.
            return Vec::new();
        }
        for decision in &due {
            inner.finishing.insert(decision.transactional_id.clone());
        }
        due
    }

    /// The last stable offset's bound on a partition: the first offset of its earliest open
    /// transaction, if any.
    pub(crate) fn first_unstable(&self, topic: &str, partition: i32) -> Option<u64> {
        let inner = self.inner.lock();
        inner
            .open
            .get(&(topic.to_string(), partition))
            .and_then(|entries| entries.values().min().copied())
    }

    /// The aborted transactions on a partition that overlap `[from, to)`.
    pub(crate) fn aborted_between(
        &self,
        topic: &str,
        partition: i32,
        from: u64,
        to: u64,
    ) -> Vec<AbortedTxn> {
        let inner = self.inner.lock();
        inner
            .aborted
            .get(&(topic.to_string(), partition))
            .map(|ranges| {
                ranges
                    .iter()
                    .filter(|range| range.last_offset >= from && range.first_offset < to)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The abort markers (producer id, offset) of the aborted transactions listed on a
    /// partition: the log cleaner keeps these markers (see [`Self::forget_aborted`]).
    pub(crate) fn listed_abort_markers(
        &self,
        topic: &str,
        partition: i32,
    ) -> std::collections::HashSet<(i64, u64)> {
        let inner = self.inner.lock();
        inner
            .aborted
            .get(&(topic.to_string(), partition))
            .map(|ranges| {
                ranges
                    .iter()
                    .map(|range| (range.producer_id, range.last_offset))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops listing a partition's aborted transactions that no read_committed consumer needs
    /// any more: those wholly below the log start, and those the log cleaner found without a
    /// record left (`without_data`, by their abort markers). A consumer told of an aborted
    /// transaction skips that producer's transactional records until it reads the abort
    /// marker, so the cleaner drops a marker only once it is no longer listed, and unlisting
    /// is durable first: memory changes only after the file does.
    pub(crate) fn forget_aborted(
        &self,
        topic: &str,
        partition: i32,
        log_start: u64,
        without_data: &[herald_storage::AbortMarker],
    ) -> Result<(), TxnError> {
        let mut inner = self.inner.lock();
        let key = (topic.to_string(), partition);
        let Some(ranges) = inner.aborted.get(&key) else {
            return Ok(());
        };
        let kept: Vec<AbortedTxn> = ranges
            .iter()
            .filter(|range| {
                range.last_offset >= log_start
                    && !without_data.iter().any(|m| {
                        m.producer_id == range.producer_id && m.offset == range.last_offset
                    })
            })
            .copied()
            .collect();
        if kept.len() == ranges.len() {
            return Ok(());
        }
        let before = Self::replace_ranges(&mut inner, key.clone(), kept);
        self.persist(&mut inner).inspect_err(|_| {
            Self::replace_ranges(&mut inner, key, before);
        })
    }

    /// Drops, at the log retention check, the aborted transactions listed for partitions that
    /// no longer exist and those wholly below their partition's log start (DeleteRecords and
    /// retention move it), so the list does not grow without bound.
    pub(crate) fn prune_aborted(&self, topics: &Topics) -> Result<(), TxnError> {
        let mut inner = self.inner.lock();
        let mut pruned = HashMap::new();
        for ((topic, partition), ranges) in &inner.aborted {
            let log_start = match topics.get(topic) {
                None => None,
                Some(t) => match usize::try_from(*partition) {
                    Ok(index) if index < t.partition_count() => {
                        // A partition not opened yet keeps its list until it is.
                        let Some(p) = t
                            .loaded_partitions()
                            .into_iter()
                            .find(|p| p.index == *partition)
                        else {
                            continue;
                        };
                        Some(p.log.offsets().log_start)
                    }
                    _ => None,
                },
            };
            let kept: Vec<AbortedTxn> = match log_start {
                Some(start) => ranges
                    .iter()
                    .filter(|range| range.last_offset >= start)
                    .copied()
                    .collect(),
                None => Vec::new(),
            };
            if kept.len() < ranges.len() {
                pruned.insert((topic.clone(), *partition), kept);
            }
        }
        if pruned.is_empty() {
            return Ok(());
        }
        let mut before = Vec::new();
        for (key, kept) in pruned {
            before.push((key.clone(), Self::replace_ranges(&mut inner, key, kept)));
        }
        self.persist(&mut inner).inspect_err(|_| {
            for (key, ranges) in before {
                Self::replace_ranges(&mut inner, key, ranges);
            }
        })
    }

    /// Sets a partition's listed aborted transactions (none: the entry goes), returning the
    /// previous ones.
    fn replace_ranges(
        inner: &mut Inner,
        key: (String, i32),
        ranges: Vec<AbortedTxn>,
    ) -> Vec<AbortedTxn> {
        if ranges.is_empty() {
            inner.aborted.remove(&key).unwrap_or_default()
        } else {
            inner.aborted.insert(key, ranges).unwrap_or_default()
        }
    }

    /// DescribeTransactions: the current transaction of each id, if the id is known.
    pub(crate) fn describe(&self, transactional_id: &str) -> Option<Txn> {
        self.inner.lock().txns.get(transactional_id).cloned()
    }

    /// ListTransactions: every id in one of `states` (all if empty) with one of `producer_ids`
    /// (all if empty).
    pub(crate) fn list(&self, states: &[String], producer_ids: &[i64]) -> Vec<Listed> {
        let inner = self.inner.lock();
        inner
            .txns
            .iter()
            .filter(|(_, txn)| states.is_empty() || states.iter().any(|s| s == txn.state.name()))
            .filter(|(_, txn)| producer_ids.is_empty() || producer_ids.contains(&txn.producer_id))
            .map(|(id, txn)| Listed {
                transactional_id: id.clone(),
                producer_id: txn.producer_id,
                state: txn.state,
                started_ms: if txn.state.open() { txn.started_ms } else { -1 },
            })
            .collect()
    }
}

/// Appends the marker to one partition and returns once it is durable under the partition's
/// flush policy; the marker's offset.
fn write_marker(
    partition: &Arc<Partition>,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
) -> Result<u64, String> {
    let batch =
        herald_storage::build_control_batch(producer_id, producer_epoch, commit, 0, now_ms());
    let info = partition
        .append(&batch)
        .map_err(|error| error.to_string())?;
    if partition.log.config().flush == herald_storage::FlushPolicy::Always {
        partition
            .log
            .sync_to(info.last_offset + 1)
            .map_err(|error| error.to_string())?;
        partition.wake_readers();
    }
    Ok(info.last_offset)
}

#[cfg(test)]
mod tests;
