//! Metadata and DescribeCluster: the single broker, and topics with their partitions
//! (auto-creating requested topics when allowed).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
};

use super::errors::{self, code};
use super::sasl::Session;
use super::{str_bytes, topic_name};
use crate::Core;
use crate::auth::acl::{Operation, ResourceType};
use crate::topics::Topic;

/// Kafka's ACL operation codes, as bit positions of an `authorized_operations` field.
mod operation {
    pub(super) const READ: i32 = 3;
    pub(super) const WRITE: i32 = 4;
    pub(super) const CREATE: i32 = 5;
    pub(super) const DELETE: i32 = 6;
    pub(super) const ALTER: i32 = 7;
    pub(super) const DESCRIBE: i32 = 8;
    pub(super) const CLUSTER_ACTION: i32 = 9;
    pub(super) const DESCRIBE_CONFIGS: i32 = 10;
    pub(super) const ALTER_CONFIGS: i32 = 11;
    pub(super) const IDEMPOTENT_WRITE: i32 = 12;
}

/// An `authorized_operations` field that was not asked for.
pub(crate) const OPERATIONS_NOT_ASKED: i32 = i32::MIN;

/// Every operation a topic supports: with no ACL in the way, a client may do all of them, and
/// Kafka says so when asked (`include_topic_authorized_operations`); with ACLs, the ones the
/// principal is allowed.
const TOPIC_OPERATION_LIST: [i32; 8] = [
    operation::READ,
    operation::WRITE,
    operation::CREATE,
    operation::DELETE,
    operation::ALTER,
    operation::DESCRIBE,
    operation::DESCRIBE_CONFIGS,
    operation::ALTER_CONFIGS,
];

/// Every operation the cluster supports.
const CLUSTER_OPERATION_LIST: [i32; 7] = [
    operation::CREATE,
    operation::ALTER,
    operation::DESCRIBE,
    operation::CLUSTER_ACTION,
    operation::DESCRIBE_CONFIGS,
    operation::ALTER_CONFIGS,
    operation::IDEMPOTENT_WRITE,
];

/// The cluster operations the session's principal may do (Kafka names the cluster
/// `kafka-cluster` in ACLs).
fn cluster_operations(core: &Core, session: &Session) -> i32 {
    authorized(
        core,
        session,
        ResourceType::Cluster,
        "kafka-cluster",
        &CLUSTER_OPERATION_LIST,
    )
}

/// The operations of `list` that the session's principal may do on the resource, as an
/// `authorized_operations` field: all of them when no ACL is enforced.
fn authorized(
    core: &Core,
    session: &Session,
    resource_type: ResourceType,
    name: &str,
    list: &[i32],
) -> i32 {
    list.iter()
        .filter(|code| {
            i8::try_from(**code)
                .ok()
                .and_then(Operation::from_code)
                .is_some_and(|operation| {
                    core.security.allows(
                        &session.principal,
                        session.peer.ip(),
                        operation,
                        resource_type,
                        name,
                    )
                })
        })
        .fold(0, |field, code| field | 1 << code)
}

/// Every operation a consumer group supports.
const GROUP_OPERATION_LIST: [i32; 3] = [operation::READ, operation::DELETE, operation::DESCRIBE];

/// The group operations the session's principal may do on `group`, for DescribeGroups.
pub(crate) fn group_operations(core: &Core, session: &Session, group: &str) -> i32 {
    authorized(
        core,
        session,
        ResourceType::Group,
        group,
        &GROUP_OPERATION_LIST,
    )
}

/// The Metadata response; the broker's address is the one advertised for `listener`, the
/// listener the client came in on.
pub(crate) fn metadata(
    core: &Core,
    session: &Session,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let node = core.config.node_id;
    let (host, port) = session.listener.advertised.clone();
    let brokers = vec![
        MetadataResponseBroker::default()
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(&host))
            .with_port(port),
    ];
    // Before v4 the request cannot say, and Kafka auto-creates.
    let allow_create = version < 4 || request.allow_auto_topic_creation;
    let topics = match request.topics {
        // v0 uses an empty list for "all topics"; later versions use null.
        None => all_topics(core, node),
        Some(list) if list.is_empty() && version == 0 => all_topics(core, node),
        Some(list) => list
            .into_iter()
            .map(|wanted| {
                match wanted.name {
                    Some(name) => named_topic(core, node, name.as_str(), allow_create),
                    // v10+ may name a topic by id only.
                    None => match core.topics.get_by_id(wanted.topic_id) {
                        Some(topic) => topic_entry(&topic, node),
                        None => MetadataResponseTopic::default()
                            .with_error_code(errors::UNKNOWN_TOPIC_ID)
                            .with_topic_id(wanted.topic_id),
                    },
                }
            })
            .collect(),
    };
    let topics = if request.include_topic_authorized_operations {
        topics
            .into_iter()
            .map(|topic| {
                let operations = match &topic.name {
                    Some(name) if topic.error_code == errors::NONE => authorized(
                        core,
                        session,
                        ResourceType::Topic,
                        name.as_str(),
                        &TOPIC_OPERATION_LIST,
                    ),
                    _ => OPERATIONS_NOT_ASKED,
                };
                topic.with_topic_authorized_operations(operations)
            })
            .collect()
    } else {
        topics
    };
    let cluster_operations = if request.include_cluster_authorized_operations {
        cluster_operations(core, session)
    } else {
        OPERATIONS_NOT_ASKED
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&core.config.cluster_id)))
        .with_controller_id(BrokerId(node))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_operations)
}

fn all_topics(core: &Core, node: i32) -> Vec<MetadataResponseTopic> {
    core.topics
        .list()
        .iter()
        .map(|topic| topic_entry(topic, node))
        .collect()
}

fn named_topic(core: &Core, node: i32, name: &str, allow_create: bool) -> MetadataResponseTopic {
    let found = if allow_create {
        core.topics.get_or_create(name)
    } else {
        Ok(core.topics.get(name))
    };
    match found {
        Ok(Some(topic)) => topic_entry(&topic, node),
        Ok(None) => MetadataResponseTopic::default()
            .with_name(Some(topic_name(name)))
            .with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION),
        Err(error) => MetadataResponseTopic::default()
            .with_name(Some(topic_name(name)))
            .with_error_code(code(error.problem())),
    }
}

fn topic_entry(topic: &Topic, node: i32) -> MetadataResponseTopic {
    // Every partition, open or still being opened after a restart (a request for one of
    // those waits for its log): listing never opens a log.
    let partitions = (0..topic.partition_count())
        .map(|index| {
            MetadataResponsePartition::default()
                .with_partition_index(i32::try_from(index).unwrap_or(i32::MAX))
                .with_leader_id(BrokerId(node))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(node)])
                .with_isr_nodes(vec![BrokerId(node)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_is_internal(false)
        .with_partitions(partitions)
}

pub(crate) fn describe_cluster(
    core: &Core,
    session: &Session,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let (host, port) = session.listener.advertised.clone();
    let operations = if request.include_cluster_authorized_operations {
        cluster_operations(core, session)
    } else {
        OPERATIONS_NOT_ASKED
    };
    DescribeClusterResponse::default()
        .with_cluster_authorized_operations(operations)
        .with_cluster_id(str_bytes(&core.config.cluster_id))
        .with_controller_id(BrokerId(core.config.node_id))
        .with_brokers(vec![
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(core.config.node_id))
                .with_host(str_bytes(&host))
                .with_port(port),
        ])
}
