//! Authorization of every request against the ACLs, before its handler runs, in Kafka's terms:
//! which operation on which resource each API needs, and the error code a refusal gets
//! (TOPIC_, GROUP_ or CLUSTER_AUTHORIZATION_FAILED).
//!
//! Handlers stay unaware of ACLs. A request that changes or reads something per topic or group
//! has its refused entries taken out before the handler sees it, and a [`Patch`] adds them back
//! to the response with the error; a request refused as a whole is answered here; read-only
//! listings are filtered after the handler. When ACLs are not enforced every request passes
//! untouched.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterResponse, DescribeLogDirsResponse, HeartbeatResponse,
    InitProducerIdResponse, JoinGroupResponse, LeaveGroupResponse, OffsetCommitResponse,
    OffsetDeleteResponse, OffsetFetchResponse, ProducerId, RequestKind, ResponseKind,
    SyncGroupResponse,
};

use tracing::debug;

use super::codec::Request;
use super::sasl::Session;
use super::{str_bytes, topic_name};
use crate::Core;
use crate::auth::{CLUSTER_RESOURCE, Operation, ResourceType};
use crate::stats::Counters;

const TOPIC_DENIED: i16 = ResponseError::TopicAuthorizationFailed.code();
const GROUP_DENIED: i16 = ResponseError::GroupAuthorizationFailed.code();
const CLUSTER_DENIED: i16 = ResponseError::ClusterAuthorizationFailed.code();
const TRANSACTIONAL_ID_DENIED: i16 = ResponseError::TransactionalIdAuthorizationFailed.code();
const UNKNOWN_TOPIC: i16 = ResponseError::UnknownTopicOrPartition.code();

/// Completes a response with what authorization took out of its request.
pub(crate) type Patch = Box<dyn FnOnce(&mut ResponseKind) + Send>;

/// What authorization decided for one request.
pub(crate) enum Gate {
    /// Serve it (possibly with entries removed), then apply the patch to the response.
    Pass(Option<Patch>),
    /// Answer this instead of serving it.
    Refuse(Box<ResponseKind>),
}

/// Who is asking, for the checks and for patches that run after the handler.
#[derive(Clone)]
struct Asker {
    core: Arc<Core>,
    principal: crate::auth::Principal,
    host: std::net::IpAddr,
}

impl Asker {
    fn allows(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        let allowed =
            self.core
                .security
                .allows(&self.principal, self.host, operation, resource_type, name);
        if !allowed {
            Counters::add(&self.core.counters.authorization_failures, 1);
            debug!(principal = %self.principal, host = %self.host, %operation, %resource_type, resource = name, "denied");
        }
        allowed
    }

    fn topic(&self, operation: Operation, name: &str) -> bool {
        self.allows(operation, ResourceType::Topic, name)
    }

    fn group(&self, operation: Operation, name: &str) -> bool {
        self.allows(operation, ResourceType::Group, name)
    }

    fn cluster(&self, operation: Operation) -> bool {
        self.allows(operation, ResourceType::Cluster, CLUSTER_RESOURCE)
    }

    /// Kafka's rule for creating a topic: CREATE on the cluster or on the topic.
    fn may_create(&self, name: &str) -> bool {
        let allowed = self.core.security.allows(
            &self.principal,
            self.host,
            Operation::Create,
            ResourceType::Cluster,
            CLUSTER_RESOURCE,
        );
        allowed || self.topic(Operation::Create, name)
    }
}

fn refuse(body: ResponseKind) -> Gate {
    Gate::Refuse(Box::new(body))
}

fn patch(f: impl FnOnce(&mut ResponseKind) + Send + 'static) -> Gate {
    Gate::Pass(Some(Box::new(f)))
}

/// AlterConfigs and IncrementalAlterConfigs alike: the resources the asker may not alter are
/// taken out of the request and answered with the refusal (the two responses have the same
/// shape under different types).
macro_rules! deny_config_changes {
    ($asker:expr, $body:expr, $kind:ident, $entry:ty) => {{
        let denied: Vec<(i8, String, i16)> = take(&mut $body.resources, |resource| {
            config_resource_denied(
                &$asker,
                Operation::AlterConfigs,
                resource.resource_type,
                resource.resource_name.as_str(),
            ) != 0
        })
        .into_iter()
        .map(|resource| denied_resource(resource.resource_type, resource.resource_name.as_str()))
        .collect();
        patch_if(denied, |response, denied| {
            if let ResponseKind::$kind(response) = response {
                for (resource_type, name, code) in denied {
                    response.responses.push(
                        <$entry>::default()
                            .with_resource_type(resource_type)
                            .with_resource_name(str_bytes(&name))
                            .with_error_code(code),
                    );
                }
            }
        })
    }};
}

/// Checks `request` for `session`'s principal; see the module docs.
pub(crate) fn gate(core: &Arc<Core>, session: &Session, request: &mut Request) -> Gate {
    if !core.security.enforce {
        return Gate::Pass(None);
    }
    let asker = Asker {
        core: core.clone(),
        principal: session.principal.clone(),
        host: session.peer.ip(),
    };
    let version = request.header.request_api_version;
    match &mut request.body {
        RequestKind::ApiVersions(_)
        | RequestKind::SaslHandshake(_)
        | RequestKind::SaslAuthenticate(_)
        // Checked by their handlers, which know the resources.
        | RequestKind::CreateAcls(_)
        | RequestKind::DescribeAcls(_)
        | RequestKind::DeleteAcls(_)
        | RequestKind::DescribeUserScramCredentials(_)
        | RequestKind::AlterUserScramCredentials(_) => Gate::Pass(None),
        RequestKind::Produce(body) => {
            if let Some(id) = &body.transactional_id {
                if !asker.allows(Operation::Write, ResourceType::TransactionalId, id.as_str()) {
                    Counters::add(&core.counters.authorization_failures, 1);
                    let id_denied = std::mem::take(&mut body.topic_data);
                    return patch(move |response| {
                        if let ResponseKind::Produce(response) = response {
                            for topic in id_denied {
                                response.responses.push(
                                    TopicProduceResponse::default()
                                        .with_name(topic.name)
                                        .with_partition_responses(
                                            topic
                                                .partition_data
                                                .iter()
                                                .map(|partition| {
                                                    PartitionProduceResponse::default()
                                                        .with_index(partition.index)
                                                        .with_error_code(TRANSACTIONAL_ID_DENIED)
                                                        .with_base_offset(-1)
                                                })
                                                .collect(),
                                        ),
                                );
                            }
                        }
                    });
                }
            }
            let denied = take(&mut body.topic_data, |topic| {
                !asker.topic(Operation::Write, topic.name.as_str())
            });
            if denied.is_empty() {
                return Gate::Pass(None);
            }
            patch(move |response| {
                if let ResponseKind::Produce(response) = response {
                    for topic in denied {
                        response.responses.push(
                            TopicProduceResponse::default()
                                .with_name(topic.name)
                                .with_topic_id(topic.topic_id)
                                .with_partition_responses(
                                    topic
                                        .partition_data
                                        .iter()
                                        .map(|partition| {
                                            PartitionProduceResponse::default()
                                                .with_index(partition.index)
                                                .with_error_code(TOPIC_DENIED)
                                                .with_base_offset(-1)
                                                .with_log_append_time_ms(-1)
                                                .with_log_start_offset(-1)
                                        })
                                        .collect(),
                                ),
                        );
                    }
                }
            })
        }
        RequestKind::Fetch(body) => {
            let denied = take(&mut body.topics, |topic| {
                let name = if version >= 13 {
                    core.topics
                        .get_by_id(topic.topic_id)
                        .map(|found| found.name.clone())
                        .unwrap_or_default()
                } else {
                    topic.topic.as_str().to_string()
                };
                !asker.topic(Operation::Read, &name)
            });
            if denied.is_empty() {
                return Gate::Pass(None);
            }
            patch(move |response| {
                if let ResponseKind::Fetch(response) = response {
                    for topic in denied {
                        response.responses.push(
                            FetchableTopicResponse::default()
                                .with_topic(topic.topic)
                                .with_topic_id(topic.topic_id)
                                .with_partitions(
                                    topic
                                        .partitions
                                        .iter()
                                        .map(|partition| {
                                            PartitionData::default()
                                                .with_partition_index(partition.partition)
                                                .with_error_code(TOPIC_DENIED)
                                                .with_high_watermark(-1)
                                                .with_last_stable_offset(-1)
                                                .with_log_start_offset(-1)
                                        })
                                        .collect(),
                                ),
                        );
                    }
                }
            })
        }
        RequestKind::ListOffsets(_) => patch(move |response| {
            if let ResponseKind::ListOffsets(response) = response {
                for topic in &mut response.topics {
                    if !asker.topic(Operation::Describe, topic.name.as_str()) {
                        for partition in &mut topic.partitions {
                            partition.error_code = TOPIC_DENIED;
                            partition.offset = -1;
                            partition.timestamp = -1;
                        }
                    }
                }
            }
        }),
        RequestKind::DeleteRecords(body) => {
            let denied = take(&mut body.topics, |topic| {
                !asker.topic(Operation::Delete, topic.name.as_str())
            });
            patch_if(denied, |response, denied| {
                if let ResponseKind::DeleteRecords(response) = response {
                    for topic in denied {
                        response.topics.push(
                            DeleteRecordsTopicResult::default()
                                .with_name(topic.name)
                                .with_partitions(
                                    topic
                                        .partitions
                                        .iter()
                                        .map(|partition| {
                                            DeleteRecordsPartitionResult::default()
                                                .with_partition_index(partition.partition_index)
                                                .with_low_watermark(-1)
                                                .with_error_code(TOPIC_DENIED)
                                        })
                                        .collect(),
                                ),
                        );
                    }
                }
            })
        }
        RequestKind::Metadata(body) => {
            let Some(topics) = &mut body.topics else {
                return patch(hide_undescribable(asker));
            };
            if topics.is_empty() && version == 0 {
                return patch(hide_undescribable(asker));
            }
            let denied: Vec<(String, i16)> = take(topics, |topic| {
                let Some(name) = &topic.name else {
                    return false;
                };
                !asker.topic(Operation::Describe, name.as_str())
                    || (core.topics.get(name.as_str()).is_none() && !asker.may_create(name.as_str()))
            })
            .into_iter()
            .filter_map(|topic| {
                let name = topic.name?.as_str().to_string();
                let code = if asker.topic(Operation::Describe, &name) {
                    UNKNOWN_TOPIC
                } else {
                    TOPIC_DENIED
                };
                Some((name, code))
            })
            .collect();
            // Topics named by id only (v10+) are checked once the handler has found their name.
            let by_id = topics.iter().any(|topic| topic.name.is_none());
            if denied.is_empty() && !by_id {
                return Gate::Pass(None);
            }
            patch(move |response| {
                if let ResponseKind::Metadata(response) = response {
                    for topic in &mut response.topics {
                        let visible = topic.name.as_ref().is_none_or(|name| {
                            asker.topic(Operation::Describe, name.as_str())
                        });
                        if !visible {
                            *topic = MetadataResponseTopic::default()
                                .with_name(None)
                                .with_topic_id(topic.topic_id)
                                .with_error_code(TOPIC_DENIED);
                        }
                    }
                    for (name, code) in denied {
                        response.topics.push(
                            MetadataResponseTopic::default()
                                .with_name(Some(topic_name(&name)))
                                .with_error_code(code),
                        );
                    }
                }
            })
        }
        RequestKind::CreateTopics(body) => {
            let denied = take(&mut body.topics, |topic| !asker.may_create(topic.name.as_str()));
            patch_if(denied, |response, denied| {
                if let ResponseKind::CreateTopics(response) = response {
                    for topic in denied {
                        response.topics.push(
                            CreatableTopicResult::default()
                                .with_name(topic.name)
                                .with_error_code(TOPIC_DENIED)
                                .with_num_partitions(-1)
                                .with_replication_factor(-1),
                        );
                    }
                }
            })
        }
        RequestKind::DeleteTopics(body) => {
            let mut denied: Vec<DeletableTopicResult> = take(&mut body.topic_names, |name| {
                !asker.topic(Operation::Delete, name.as_str())
            })
            .into_iter()
            .map(|name| DeletableTopicResult::default().with_name(Some(name)))
            .collect();
            denied.extend(
                take(&mut body.topics, |state| {
                    let name = match &state.name {
                        Some(name) => name.as_str().to_string(),
                        None => core
                            .topics
                            .get_by_id(state.topic_id)
                            .map(|topic| topic.name.clone())
                            .unwrap_or_default(),
                    };
                    !asker.topic(Operation::Delete, &name)
                })
                .into_iter()
                .map(|state| {
                    DeletableTopicResult::default()
                        .with_name(state.name)
                        .with_topic_id(state.topic_id)
                }),
            );
            patch_if(denied, |response, denied| {
                if let ResponseKind::DeleteTopics(response) = response {
                    for result in denied {
                        response.responses.push(result.with_error_code(TOPIC_DENIED));
                    }
                }
            })
        }
        RequestKind::CreatePartitions(body) => {
            let denied = take(&mut body.topics, |topic| {
                !asker.topic(Operation::Alter, topic.name.as_str())
            });
            patch_if(denied, |response, denied| {
                if let ResponseKind::CreatePartitions(response) = response {
                    for topic in denied {
                        response.results.push(
                            CreatePartitionsTopicResult::default()
                                .with_name(topic.name)
                                .with_error_code(TOPIC_DENIED),
                        );
                    }
                }
            })
        }
        RequestKind::DescribeConfigs(_) => patch(move |response| {
            if let ResponseKind::DescribeConfigs(response) = response {
                for result in &mut response.results {
                    let code = config_resource_denied(
                        &asker,
                        Operation::DescribeConfigs,
                        result.resource_type,
                        result.resource_name.as_str(),
                    );
                    if code != 0 {
                        result.error_code = code;
                        result.error_message = None;
                        result.configs.clear();
                    }
                }
            }
        }),
        RequestKind::AlterConfigs(body) => deny_config_changes!(
            asker,
            body,
            AlterConfigs,
            kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse
        ),
        RequestKind::IncrementalAlterConfigs(body) => deny_config_changes!(
            asker,
            body,
            IncrementalAlterConfigs,
            kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse
        ),
        RequestKind::DescribeCluster(_) => {
            if asker.cluster(Operation::Describe) {
                Gate::Pass(None)
            } else {
                refuse(ResponseKind::DescribeCluster(
                    DescribeClusterResponse::default().with_error_code(CLUSTER_DENIED),
                ))
            }
        }
        RequestKind::DescribeLogDirs(_) => {
            if asker.cluster(Operation::Describe) {
                Gate::Pass(None)
            } else {
                refuse(ResponseKind::DescribeLogDirs(
                    DescribeLogDirsResponse::default().with_error_code(CLUSTER_DENIED),
                ))
            }
        }
        RequestKind::InitProducerId(body) => {
            let allowed = match &body.transactional_id {
                Some(id) => asker.allows(Operation::Write, ResourceType::TransactionalId, id.as_str()),
                // KIP-679: an idempotent producer needs IDEMPOTENT_WRITE on the cluster or
                // WRITE on some topic.
                None => {
                    core.security.allows(
                        &asker.principal,
                        asker.host,
                        Operation::IdempotentWrite,
                        ResourceType::Cluster,
                        CLUSTER_RESOURCE,
                    ) || core.security.allows_by_type(
                        &asker.principal,
                        asker.host,
                        Operation::Write,
                        ResourceType::Topic,
                    )
                }
            };
            if allowed {
                return Gate::Pass(None);
            }
            Counters::add(&core.counters.authorization_failures, 1);
            let code = if body.transactional_id.is_some() {
                TRANSACTIONAL_ID_DENIED
            } else {
                CLUSTER_DENIED
            };
            refuse(ResponseKind::InitProducerId(
                InitProducerIdResponse::default()
                    .with_error_code(code)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            ))
        }
        RequestKind::FindCoordinator(body) => {
            let (resource_type, code) = if body.key_type == 1 {
                (ResourceType::TransactionalId, TRANSACTIONAL_ID_DENIED)
            } else {
                (ResourceType::Group, GROUP_DENIED)
            };
            if version < 4 {
                if asker.allows(Operation::Describe, resource_type, body.key.as_str()) {
                    return Gate::Pass(None);
                }
                return refuse(ResponseKind::FindCoordinator(
                    kafka_protocol::messages::FindCoordinatorResponse::default()
                        .with_error_code(code)
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                ));
            }
            let denied = take(&mut body.coordinator_keys, |key| {
                !asker.allows(Operation::Describe, resource_type, key.as_str())
            });
            patch_if(denied, move |response, denied| {
                if let ResponseKind::FindCoordinator(response) = response {
                    for key in denied {
                        response.coordinators.push(
                            Coordinator::default()
                                .with_key(key)
                                .with_node_id(BrokerId(-1))
                                .with_port(-1)
                                .with_error_code(code),
                        );
                    }
                }
            })
        }
        RequestKind::JoinGroup(body) => group_or(&asker, body.group_id.as_str(), || {
            ResponseKind::JoinGroup(
                JoinGroupResponse::default()
                    .with_error_code(GROUP_DENIED)
                    .with_generation_id(-1)
                    .with_member_id(body.member_id.clone()),
            )
        }),
        RequestKind::SyncGroup(body) => group_or(&asker, body.group_id.as_str(), || {
            ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(GROUP_DENIED))
        }),
        RequestKind::Heartbeat(body) => group_or(&asker, body.group_id.as_str(), || {
            ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(GROUP_DENIED))
        }),
        RequestKind::LeaveGroup(body) => group_or(&asker, body.group_id.as_str(), || {
            ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(GROUP_DENIED))
        }),
        RequestKind::OffsetCommit(body) => {
            if !asker.group(Operation::Read, body.group_id.as_str()) {
                let topics = body
                    .topics
                    .iter()
                    .map(|topic| commit_topic(topic, GROUP_DENIED))
                    .collect();
                return refuse(ResponseKind::OffsetCommit(
                    OffsetCommitResponse::default().with_topics(topics),
                ));
            }
            let denied = take(&mut body.topics, |topic| {
                !asker.topic(Operation::Read, topic.name.as_str())
            });
            patch_if(denied, |response, denied| {
                if let ResponseKind::OffsetCommit(response) = response {
                    for topic in denied {
                        response.topics.push(commit_topic(&topic, TOPIC_DENIED));
                    }
                }
            })
        }
        RequestKind::OffsetFetch(body) => {
            if version < 8 {
                if !asker.group(Operation::Describe, body.group_id.as_str()) {
                    return refuse(ResponseKind::OffsetFetch(
                        OffsetFetchResponse::default().with_error_code(GROUP_DENIED),
                    ));
                }
            } else if body
                .groups
                .iter()
                .any(|group| !asker.group(Operation::Describe, group.group_id.as_str()))
            {
                let asker = asker.clone();
                return patch(move |response| {
                    if let ResponseKind::OffsetFetch(response) = response {
                        for group in &mut response.groups {
                            if !asker.group(Operation::Describe, group.group_id.as_str()) {
                                group.error_code = GROUP_DENIED;
                                group.topics.clear();
                            }
                        }
                        hide_fetched_offsets(&asker, response);
                    }
                });
            }
            patch(move |response| {
                if let ResponseKind::OffsetFetch(response) = response {
                    hide_fetched_offsets(&asker, response);
                }
            })
        }
        RequestKind::OffsetDelete(body) => {
            if !asker.group(Operation::Delete, body.group_id.as_str()) {
                return refuse(ResponseKind::OffsetDelete(
                    OffsetDeleteResponse::default().with_error_code(GROUP_DENIED),
                ));
            }
            let denied = take(&mut body.topics, |topic| {
                !asker.topic(Operation::Read, topic.name.as_str())
            });
            patch_if(denied, |response, denied| {
                if let ResponseKind::OffsetDelete(response) = response {
                    for topic in denied {
                        response.topics.push(
                            OffsetDeleteResponseTopic::default()
                                .with_name(topic.name)
                                .with_partitions(
                                    topic
                                        .partitions
                                        .iter()
                                        .map(|partition| {
                                            OffsetDeleteResponsePartition::default()
                                                .with_partition_index(partition.partition_index)
                                                .with_error_code(TOPIC_DENIED)
                                        })
                                        .collect(),
                                ),
                        );
                    }
                }
            })
        }
        RequestKind::ListGroups(_) => {
            if asker.core.security.allows(
                &asker.principal,
                asker.host,
                Operation::Describe,
                ResourceType::Cluster,
                CLUSTER_RESOURCE,
            ) {
                return Gate::Pass(None);
            }
            patch(move |response| {
                if let ResponseKind::ListGroups(response) = response {
                    response.groups.retain(|group| {
                        asker.core.security.allows(
                            &asker.principal,
                            asker.host,
                            Operation::Describe,
                            ResourceType::Group,
                            group.group_id.as_str(),
                        )
                    });
                }
            })
        }
        RequestKind::DescribeGroups(_) => patch(move |response| {
            if let ResponseKind::DescribeGroups(response) = response {
                for group in &mut response.groups {
                    if !asker.group(Operation::Describe, group.group_id.as_str()) {
                        group.error_code = GROUP_DENIED;
                        group.members.clear();
                        group.group_state = str_bytes("");
                        group.protocol_data = str_bytes("");
                        group.protocol_type = str_bytes("");
                    }
                }
            }
        }),
        RequestKind::DeleteGroups(body) => {
            let denied = take(&mut body.groups_names, |group| {
                !asker.group(Operation::Delete, group.as_str())
            });
            patch_if(denied, |response, denied| {
                if let ResponseKind::DeleteGroups(response) = response {
                    for group in denied {
                        response.results.push(
                            kafka_protocol::messages::delete_groups_response::DeletableGroupResult::default()
                                .with_group_id(group)
                                .with_error_code(GROUP_DENIED),
                        );
                    }
                }
            })
        }
        // Transactions: WRITE on the transactional id to take part, DESCRIBE to see it; the
        // offsets of a transaction also need READ on the group, as an OffsetCommit does.
        RequestKind::AddPartitionsToTxn(body) => {
            let id = body.v3_and_below_transactional_id.as_str();
            let allowed = asker.allows(Operation::Write, ResourceType::TransactionalId, id)
                && body
                    .v3_and_below_topics
                    .iter()
                    .all(|topic| asker.topic(Operation::Write, topic.name.as_str()));
            if allowed {
                return Gate::Pass(None);
            }
            Counters::add(&core.counters.authorization_failures, 1);
            let id_allowed = asker.allows(Operation::Write, ResourceType::TransactionalId, id);
            let topics = body
                .v3_and_below_topics
                .iter()
                .map(|topic| {
                    let code = if !id_allowed {
                        TRANSACTIONAL_ID_DENIED
                    } else if asker.topic(Operation::Write, topic.name.as_str()) {
                        ResponseError::OperationNotAttempted.code()
                    } else {
                        TOPIC_DENIED
                    };
                    kafka_protocol::messages::add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                        .with_name(topic.name.clone())
                        .with_results_by_partition(
                            topic
                                .partitions
                                .iter()
                                .map(|index| {
                                    kafka_protocol::messages::add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                                        .with_partition_index(*index)
                                        .with_partition_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            refuse(ResponseKind::AddPartitionsToTxn(
                kafka_protocol::messages::AddPartitionsToTxnResponse::default()
                    .with_results_by_topic_v3_and_below(topics),
            ))
        }
        RequestKind::AddOffsetsToTxn(body) => {
            let code = if !asker.allows(
                Operation::Write,
                ResourceType::TransactionalId,
                body.transactional_id.as_str(),
            ) {
                TRANSACTIONAL_ID_DENIED
            } else if !asker.group(Operation::Read, body.group_id.as_str()) {
                GROUP_DENIED
            } else {
                return Gate::Pass(None);
            };
            Counters::add(&core.counters.authorization_failures, 1);
            refuse(ResponseKind::AddOffsetsToTxn(
                kafka_protocol::messages::AddOffsetsToTxnResponse::default().with_error_code(code),
            ))
        }
        RequestKind::TxnOffsetCommit(body) => {
            let code = if !asker.allows(
                Operation::Write,
                ResourceType::TransactionalId,
                body.transactional_id.as_str(),
            ) {
                TRANSACTIONAL_ID_DENIED
            } else if !asker.group(Operation::Read, body.group_id.as_str()) {
                GROUP_DENIED
            } else if body
                .topics
                .iter()
                .any(|topic| !asker.topic(Operation::Read, topic.name.as_str()))
            {
                TOPIC_DENIED
            } else {
                return Gate::Pass(None);
            };
            Counters::add(&core.counters.authorization_failures, 1);
            let topics = body
                .topics
                .iter()
                .map(|topic| {
                    kafka_protocol::messages::txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                        .with_name(topic.name.clone())
                        .with_partitions(
                            topic
                                .partitions
                                .iter()
                                .map(|partition| {
                                    kafka_protocol::messages::txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                                        .with_partition_index(partition.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            refuse(ResponseKind::TxnOffsetCommit(
                kafka_protocol::messages::TxnOffsetCommitResponse::default().with_topics(topics),
            ))
        }
        RequestKind::EndTxn(body) => {
            if asker.allows(
                Operation::Write,
                ResourceType::TransactionalId,
                body.transactional_id.as_str(),
            ) {
                return Gate::Pass(None);
            }
            Counters::add(&core.counters.authorization_failures, 1);
            refuse(ResponseKind::EndTxn(
                kafka_protocol::messages::EndTxnResponse::default()
                    .with_error_code(TRANSACTIONAL_ID_DENIED),
            ))
        }
        RequestKind::DescribeTransactions(_) => patch(move |response| {
            if let ResponseKind::DescribeTransactions(response) = response {
                for state in &mut response.transaction_states {
                    if !asker.allows(
                        Operation::Describe,
                        ResourceType::TransactionalId,
                        state.transactional_id.as_str(),
                    ) {
                        *state = kafka_protocol::messages::describe_transactions_response::TransactionState::default()
                            .with_transactional_id(state.transactional_id.clone())
                            .with_error_code(TRANSACTIONAL_ID_DENIED)
                            .with_producer_id(ProducerId(-1))
                            .with_producer_epoch(-1)
                            .with_transaction_start_time_ms(-1);
                    }
                }
            }
        }),
        RequestKind::ListTransactions(_) => patch(move |response| {
            if let ResponseKind::ListTransactions(response) = response {
                response.transaction_states.retain(|state| {
                    asker.allows(
                        Operation::Describe,
                        ResourceType::TransactionalId,
                        state.transactional_id.as_str(),
                    )
                });
            }
        }),
        // Every served API is listed above; what else decodes has no handler, and dispatch
        // answers it with nothing.
        _ => Gate::Pass(None),
    }
}

/// Removes the entries `denied` says are refused and returns them.
fn take<T>(entries: &mut Vec<T>, mut denied: impl FnMut(&T) -> bool) -> Vec<T> {
    let (refused, kept): (Vec<T>, Vec<T>) = entries.drain(..).partition(|entry| denied(entry));
    *entries = kept;
    refused
}

/// A patch applying `apply` to the refused entries, or none when there are none.
fn patch_if<T: Send + 'static>(
    denied: Vec<T>,
    apply: impl FnOnce(&mut ResponseKind, Vec<T>) + Send + 'static,
) -> Gate {
    if denied.is_empty() {
        return Gate::Pass(None);
    }
    patch(move |response| apply(response, denied))
}

fn group_or(asker: &Asker, group: &str, refused: impl FnOnce() -> ResponseKind) -> Gate {
    if asker.group(Operation::Read, group) {
        Gate::Pass(None)
    } else {
        refuse(refused())
    }
}

fn commit_topic(
    topic: &kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic,
    code: i16,
) -> OffsetCommitResponseTopic {
    OffsetCommitResponseTopic::default()
        .with_name(topic.name.clone())
        .with_topic_id(topic.topic_id)
        .with_partitions(
            topic
                .partitions
                .iter()
                .map(|partition| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(code)
                })
                .collect(),
        )
}

/// Config resources: 2 is a topic; the broker (4) and its loggers (8) are the cluster's.
fn config_resource_denied(
    asker: &Asker,
    operation: Operation,
    resource_type: i8,
    name: &str,
) -> i16 {
    if resource_type == 2 {
        if asker.topic(operation, name) {
            0
        } else {
            TOPIC_DENIED
        }
    } else if asker.cluster(operation) {
        0
    } else {
        CLUSTER_DENIED
    }
}

fn denied_resource(resource_type: i8, name: &str) -> (i8, String, i16) {
    let code = if resource_type == 2 {
        TOPIC_DENIED
    } else {
        CLUSTER_DENIED
    };
    (resource_type, name.to_string(), code)
}

/// Drops, from an all-topics Metadata response, the topics the principal may not describe.
fn hide_undescribable(asker: Asker) -> impl FnOnce(&mut ResponseKind) + Send + 'static {
    move |response| {
        if let ResponseKind::Metadata(response) = response {
            response.topics.retain(|topic| {
                topic.name.as_ref().is_some_and(|name| {
                    asker.core.security.allows(
                        &asker.principal,
                        asker.host,
                        Operation::Describe,
                        ResourceType::Topic,
                        name.as_str(),
                    )
                })
            });
        }
    }
}

/// Committed offsets of topics the principal may not describe are not shown.
fn hide_fetched_offsets(asker: &Asker, response: &mut OffsetFetchResponse) {
    let visible = |name: &str| {
        asker.core.security.allows(
            &asker.principal,
            asker.host,
            Operation::Describe,
            ResourceType::Topic,
            name,
        )
    };
    response.topics.retain(|topic| visible(topic.name.as_str()));
    for group in &mut response.groups {
        group.topics.retain(|topic| visible(topic.name.as_str()));
    }
}
