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
use super::{str_bytes, topic_name};
use crate::Core;
use crate::auth::Listener;
use crate::topics::Topic;

/// The Metadata response; the broker's address is the one advertised for `listener`, the
/// listener the client came in on.
pub(crate) fn metadata(
    core: &Core,
    listener: &Listener,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let node = core.config.node_id;
    let (host, port) = listener.advertised.clone();
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
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&core.config.cluster_id)))
        .with_controller_id(BrokerId(node))
        .with_topics(topics)
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
    let partitions = topic
        .partitions()
        .iter()
        .map(|partition| {
            MetadataResponsePartition::default()
                .with_partition_index(partition.index)
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
    listener: &Listener,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let (host, port) = listener.advertised.clone();
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(&core.config.cluster_id))
        .with_controller_id(BrokerId(core.config.node_id))
        .with_brokers(vec![
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(core.config.node_id))
                .with_host(str_bytes(&host))
                .with_port(port),
        ])
}
