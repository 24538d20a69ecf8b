//! The transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn,
//! DescribeTransactions and ListTransactions, translated to calls on the transaction
//! coordinator ([`crate::txn::Transactions`]). InitProducerId with a transactional id is in
//! `producer_id.rs`.
//!
//! Every handler that changes the durable state runs on the blocking pool (it fsyncs), and the
//! connection waits for it, so a producer's next request sees its effect.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedState,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId,
    ResponseKind, TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use tracing::{debug, warn};

use super::{Reply, blocking, str_bytes, topic_name};
use crate::Core;
use crate::txn::{TxnError, TxnOffset};

/// The Kafka error code for a refused transactional request. `fenced_code` says whether the
/// request's version knows PRODUCER_FENCED (KIP-588); older ones get INVALID_PRODUCER_EPOCH.
pub(crate) fn txn_code(error: &TxnError, fenced_code: bool) -> i16 {
    match error {
        TxnError::Fenced { .. } if fenced_code => ResponseError::ProducerFenced.code(),
        TxnError::Fenced { .. } => ResponseError::InvalidProducerEpoch.code(),
        TxnError::ProducerIdMapping { .. } => ResponseError::InvalidProducerIdMapping.code(),
        TxnError::InvalidState { .. } => ResponseError::InvalidTxnState.code(),
        TxnError::Concurrent => ResponseError::ConcurrentTransactions.code(),
        TxnError::InvalidTimeout { .. } => ResponseError::InvalidTransactionTimeout.code(),
        TxnError::Limit { .. } => ResponseError::PolicyViolation.code(),
        TxnError::UnknownPartition => ResponseError::UnknownTopicOrPartition.code(),
        TxnError::Storage(_) => ResponseError::KafkaStorageError.code(),
        // The enum is non-exhaustive for other crates only; this arm keeps the match total.
        #[allow(unreachable_patterns)]
        _ => ResponseError::UnknownServerError.code(),
    }
}

fn log_refusal(api: &str, transactional_id: &str, error: &TxnError) {
    match error {
        TxnError::Storage(_) => {
            warn!(api, transactional_id, %error, "transactional request failed")
        }
        _ => debug!(api, transactional_id, %error, "transactional request refused"),
    }
}

/// AddPartitionsToTxn v0-v3.
pub(crate) fn add_partitions(
    core: &Arc<Core>,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> Reply {
    blocking(core, move |core| {
        let id = request.v3_and_below_transactional_id.as_str().to_string();
        let wanted: Vec<(String, i32)> = request
            .v3_and_below_topics
            .iter()
            .flat_map(|topic| {
                let name = topic.name.as_str().to_string();
                topic
                    .partitions
                    .iter()
                    .map(move |partition| (name.clone(), *partition))
            })
            .collect();
        let result = core.transactions.add_partitions(
            &core.topics,
            &id,
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            &wanted,
        );
        let failed = result.as_ref().err();
        if let Some(error) = failed {
            log_refusal("AddPartitionsToTxn", &id, error);
        }
        let topics = request
            .v3_and_below_topics
            .iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|index| {
                        let code = match failed {
                            None => 0,
                            // Kafka names the partitions at fault and marks the others as not
                            // attempted.
                            Some(TxnError::UnknownPartition) => {
                                let known = core
                                    .topics
                                    .get(topic.name.as_str())
                                    .and_then(|t| t.partition(*index))
                                    .is_some();
                                if known {
                                    ResponseError::OperationNotAttempted.code()
                                } else {
                                    ResponseError::UnknownTopicOrPartition.code()
                                }
                            }
                            Some(error) => txn_code(error, version >= 2),
                        };
                        AddPartitionsToTxnPartitionResult::default()
                            .with_partition_index(*index)
                            .with_partition_error_code(code)
                    })
                    .collect();
                AddPartitionsToTxnTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_results_by_partition(partitions)
            })
            .collect();
        ResponseKind::AddPartitionsToTxn(
            AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics),
        )
    })
}

/// AddOffsetsToTxn v0-v3.
pub(crate) fn add_offsets(
    core: &Arc<Core>,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> Reply {
    blocking(core, move |core| {
        let id = request.transactional_id.as_str();
        let code = match core.transactions.add_offsets(
            id,
            request.producer_id.0,
            request.producer_epoch,
            request.group_id.as_str(),
        ) {
            Ok(()) => 0,
            Err(error) => {
                log_refusal("AddOffsetsToTxn", id, &error);
                txn_code(&error, version >= 2)
            }
        };
        ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(code))
    })
}

/// TxnOffsetCommit v0-v3: the offsets wait with the transaction until EndTxn.
pub(crate) fn offset_commit(
    core: &Arc<Core>,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> Reply {
    let id = request.transactional_id.as_str().to_string();
    let group = request.group_id.as_str().to_string();
    let mut offsets = Vec::new();
    let mut unknown = Vec::new();
    let mut too_large = Vec::new();
    // The same bound as OffsetCommit's, so a transaction's offsets always fit the offsets log.
    let metadata_bytes_max = core.config.groups.offset_metadata_bytes_max;
    for topic in &request.topics {
        let count = core
            .topics
            .get(topic.name.as_str())
            .map(|t| t.partition_count());
        for partition in &topic.partitions {
            let exists = count.is_some_and(|count| {
                partition.partition_index >= 0
                    && usize::try_from(partition.partition_index).unwrap_or(usize::MAX) < count
            });
            if !exists {
                unknown.push((topic.name.as_str().to_string(), partition.partition_index));
                continue;
            }
            let metadata_bytes = partition.committed_metadata.as_ref().map_or(0, |m| m.len());
            if metadata_bytes > metadata_bytes_max {
                too_large.push((topic.name.as_str().to_string(), partition.partition_index));
                continue;
            }
            offsets.push(TxnOffset {
                group: group.clone(),
                topic: topic.name.as_str().to_string(),
                partition: partition.partition_index,
                offset: partition.committed_offset,
                leader_epoch: partition.committed_leader_epoch,
                metadata: partition
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_default(),
            });
        }
    }
    let result = core.transactions.offset_commit(
        &id,
        request.producer_id.0,
        request.producer_epoch,
        offsets,
    );
    if let Err(error) = &result {
        log_refusal("TxnOffsetCommit", &id, error);
    }
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let is_unknown = unknown
                        .iter()
                        .any(|(t, p)| t == topic.name.as_str() && *p == partition.partition_index);
                    let is_too_large = too_large
                        .iter()
                        .any(|(t, p)| t == topic.name.as_str() && *p == partition.partition_index);
                    let code = if is_unknown {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else if is_too_large {
                        ResponseError::OffsetMetadataTooLarge.code()
                    } else {
                        match &result {
                            Ok(()) => 0,
                            Err(error) => txn_code(error, version >= 3),
                        }
                    };
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(code)
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    Reply::Ready(Box::new(ResponseKind::TxnOffsetCommit(
        TxnOffsetCommitResponse::default().with_topics(topics),
    )))
}

/// EndTxn v0-v3: records the decision, commits the transaction's offsets (on commit), writes
/// the markers, and answers once all of it is durable.
pub(crate) fn end_txn(core: &Arc<Core>, request: EndTxnRequest, version: i16) -> Reply {
    let core = core.clone();
    Reply::Serial(Box::pin(async move {
        let id = request.transactional_id.as_str().to_string();
        let result = end(&core, &id, &request).await;
        let code = match result {
            Ok(()) => 0,
            Err(error) => {
                log_refusal("EndTxn", &id, &error);
                txn_code(&error, version >= 2)
            }
        };
        Some(ResponseKind::EndTxn(
            EndTxnResponse::default().with_error_code(code),
        ))
    }))
}

async fn end(core: &Arc<Core>, id: &str, request: &EndTxnRequest) -> Result<(), TxnError> {
    let (producer_id, producer_epoch, commit) = (
        request.producer_id.0,
        request.producer_epoch,
        request.committed,
    );
    let prepare = {
        let core = core.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || {
            core.transactions
                .end_prepare(&id, producer_id, producer_epoch, commit)
        })
        .await
        .map_err(|error| TxnError::Storage(format!("EndTxn task failed: {error}")))??
    };
    let Some(decision) = prepare else {
        return Ok(());
    };
    complete(core, decision).await
}

/// Carries out a recorded decision: the offsets of a commit, then the markers.
pub(crate) async fn complete(
    core: &Arc<Core>,
    decision: crate::txn::Decision,
) -> Result<(), TxnError> {
    if decision.commit && !decision.offsets.is_empty() {
        let committed = core
            .groups
            .commit_transactional(
                decision
                    .offsets
                    .iter()
                    .map(|o| {
                        (
                            o.group.clone(),
                            o.topic.clone(),
                            o.partition,
                            o.offset,
                            o.leader_epoch,
                            o.metadata.clone(),
                        )
                    })
                    .collect(),
            )
            .await;
        if let Err(error) = committed {
            core.transactions.release(&decision.transactional_id);
            return Err(TxnError::Storage(format!(
                "committing the offsets: {error}"
            )));
        }
    }
    let core = core.clone();
    tokio::task::spawn_blocking(move || {
        core.transactions
            .finish(&core.topics, &decision.transactional_id, decision.commit)
    })
    .await
    .map_err(|error| TxnError::Storage(format!("EndTxn task failed: {error}")))?
}

/// DescribeTransactions v0.
pub(crate) fn describe(core: &Core, request: DescribeTransactionsRequest) -> ResponseKind {
    let states = request
        .transactional_ids
        .iter()
        .map(|id| {
            let state = DescribedState::default().with_transactional_id(id.clone());
            match core.transactions.describe(id.as_str()) {
                None => state
                    .with_error_code(ResponseError::TransactionalIdNotFound.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1),
                Some(txn) => {
                    let mut topics: Vec<TopicData> = Vec::new();
                    for p in &txn.partitions {
                        match topics.iter_mut().find(|t| t.topic.as_str() == p.topic) {
                            Some(topic) => topic.partitions.push(p.partition),
                            None => topics.push(
                                TopicData::default()
                                    .with_topic(topic_name(&p.topic))
                                    .with_partitions(vec![p.partition]),
                            ),
                        }
                    }
                    state
                        .with_transaction_state(str_bytes(txn.state.name()))
                        .with_transaction_timeout_ms(txn.timeout_ms)
                        .with_transaction_start_time_ms(txn.started_ms)
                        .with_producer_id(ProducerId(txn.producer_id))
                        .with_producer_epoch(txn.producer_epoch)
                        .with_topics(topics)
                }
            }
        })
        .collect();
    ResponseKind::DescribeTransactions(
        DescribeTransactionsResponse::default().with_transaction_states(states),
    )
}

/// ListTransactions v0-v1 (v1 adds the least duration of the open transactions shown).
pub(crate) fn list(core: &Core, request: ListTransactionsRequest) -> ResponseKind {
    const KNOWN: [&str; 6] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
    ];
    let filters: Vec<String> = request
        .state_filters
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    let unknown: Vec<_> = request
        .state_filters
        .iter()
        .filter(|s| !KNOWN.contains(&s.as_str()))
        .cloned()
        .collect();
    let pids: Vec<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let states = core
        .transactions
        .list(&filters, &pids)
        .into_iter()
        .filter(|listed| {
            request.duration_filter < 0
                || (listed.started_ms >= 0
                    && now.saturating_sub(listed.started_ms) >= request.duration_filter)
        })
        .map(|listed| {
            ListedState::default()
                .with_transactional_id(TransactionalId(str_bytes(&listed.transactional_id)))
                .with_producer_id(ProducerId(listed.producer_id))
                .with_transaction_state(str_bytes(listed.state.name()))
        })
        .collect();
    ResponseKind::ListTransactions(
        ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown)
            .with_transaction_states(states),
    )
}
