//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions.
//!
//! These touch files and fsync the topic metadata, so they run on the blocking pool and
//! answer later rather than hold up the connection's task.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, ResponseKind,
};
use tracing::info;

use super::configs::DEFAULT_CONFIG;
use super::errors::{self, code};
use super::{Reply, blocking, str_bytes, topic_name};
use crate::Core;
use crate::topic_config::{self, Overrides};

pub(crate) fn create_topics(core: &Arc<Core>, request: CreateTopicsRequest, version: i16) -> Reply {
    blocking(core, move |core| {
        let mut results = Vec::with_capacity(request.topics.len());
        for wanted in request.topics {
            let name = wanted.name.as_str().to_string();
            let mut result = CreatableTopicResult::default().with_name(topic_name(&name));
            let mut num_partitions = wanted.num_partitions;
            let mut replication_factor = wanted.replication_factor;
            if !wanted.assignments.is_empty() {
                let indexes: Vec<i32> = wanted
                    .assignments
                    .iter()
                    .map(|a| a.partition_index)
                    .collect();
                let replicas = wanted.assignments.iter().map(|a| a.broker_ids.as_slice());
                let refused = if num_partitions != -1 || replication_factor != -1 {
                    Some((
                        errors::INVALID_REQUEST,
                        "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".to_string(),
                    ))
                } else {
                    assignment_problem(core.config.node_id, &indexes, replicas)
                        .map(|message| (errors::INVALID_REPLICA_ASSIGNMENT, message))
                };
                if let Some((error_code, message)) = refused {
                    results.push(
                        result
                            .with_error_code(error_code)
                            .with_error_message(Some(str_bytes(&message))),
                    );
                    continue;
                }
                num_partitions = i32::try_from(indexes.len()).unwrap_or(i32::MAX);
                replication_factor = 1;
            }
            let overrides: Overrides = wanted
                .configs
                .iter()
                .filter_map(|config| {
                    let value = config.value.as_ref()?;
                    Some((config.name.as_str().to_string(), value.as_str().to_string()))
                })
                .collect();
            match core.topics.create(
                &name,
                num_partitions,
                replication_factor,
                overrides.clone(),
                request.validate_only,
            ) {
                Ok(topic) => {
                    if !request.validate_only {
                        info!(topic = %name, partitions = topic.partition_count(), "created topic");
                    }
                    if version >= 5 {
                        let partitions = if request.validate_only {
                            if wanted.num_partitions == -1 {
                                i32::try_from(core.config.num_partitions).unwrap_or(i32::MAX)
                            } else {
                                wanted.num_partitions
                            }
                        } else {
                            i32::try_from(topic.partition_count()).unwrap_or(i32::MAX)
                        };
                        result = result
                            .with_num_partitions(partitions)
                            .with_replication_factor(1)
                            .with_configs(Some(topic_configs(&core, &overrides)));
                    }
                    if version >= 7 {
                        result = result.with_topic_id(topic.id);
                    }
                    results.push(result);
                }
                Err(error) => {
                    let mut result = result.with_error_code(code(error.problem()));
                    if version >= 1 {
                        result = result.with_error_message(Some(str_bytes(&error.to_string())));
                    }
                    results.push(result);
                }
            }
        }
        ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results))
    })
}

/// The configs of a new topic as CreateTopics v5+ reports them.
fn topic_configs(core: &Core, overrides: &Overrides) -> Vec<CreatableTopicConfigs> {
    topic_config::SPECS
        .iter()
        .map(|spec| spec.name)
        .map(|name| {
            let value = topic_config::value(&core.config, overrides, name);
            let source = if overrides.contains_key(name) {
                super::configs::DYNAMIC_TOPIC_CONFIG
            } else {
                DEFAULT_CONFIG
            };
            CreatableTopicConfigs::default()
                .with_name(str_bytes(name))
                .with_value(value.as_deref().map(str_bytes))
                .with_config_source(source)
        })
        .collect()
}

pub(crate) fn delete_topics(core: &Arc<Core>, request: DeleteTopicsRequest, version: i16) -> Reply {
    blocking(core, move |core| {
        // v6 names topics by name or id; earlier versions by name only.
        let wanted: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
            request
                .topics
                .into_iter()
                .map(|state| {
                    (
                        state.name.map(|name| name.as_str().to_string()),
                        state.topic_id,
                    )
                })
                .collect()
        } else {
            request
                .topic_names
                .into_iter()
                .map(|name| (Some(name.as_str().to_string()), uuid::Uuid::nil()))
                .collect()
        };
        let responses = wanted
            .into_iter()
            .map(|(name, id)| {
                let topic = match &name {
                    Some(name) => core.topics.get(name),
                    None => core.topics.get_by_id(id),
                };
                let mut result = DeletableTopicResult::default()
                    .with_name(name.as_deref().map(topic_name))
                    .with_topic_id(id);
                let Some(topic) = topic else {
                    let error = if name.is_some() {
                        errors::UNKNOWN_TOPIC_OR_PARTITION
                    } else {
                        errors::UNKNOWN_TOPIC_ID
                    };
                    return result.with_error_code(error);
                };
                if version >= 6 {
                    result = result
                        .with_name(Some(topic_name(&topic.name)))
                        .with_topic_id(topic.id);
                }
                match core.topics.delete(&topic.name) {
                    Ok(()) => result,
                    Err(error) => {
                        let mut result = result.with_error_code(code(error.problem()));
                        if version >= 5 {
                            result = result.with_error_message(Some(str_bytes(&error.to_string())));
                        }
                        result
                    }
                }
            })
            .collect();
        ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(responses))
    })
}

pub(crate) fn create_partitions(core: &Arc<Core>, request: CreatePartitionsRequest) -> Reply {
    blocking(core, move |core| {
        let results = request
            .topics
            .into_iter()
            .map(|wanted| {
                let name = wanted.name.as_str().to_string();
                let result = CreatePartitionsTopicResult::default().with_name(topic_name(&name));
                // An assignment is fine if it names only this broker, one list per new partition.
                let current = core.topics.get(&name).map_or(0, |t| t.partition_count());
                let assignment = wanted.assignments.as_ref().filter(|a| !a.is_empty()).and_then(|a| {
                    let new = i64::from(wanted.count) - current as i64;
                    if new != a.len() as i64 {
                        return Some(format!(
                            "Increasing the number of partitions by {new} but {} assignments provided.",
                            a.len()
                        ));
                    }
                    let indexes: Vec<i32> = (0..a.len()).map(|i| i as i32).collect();
                    assignment_problem(
                        core.config.node_id,
                        &indexes,
                        a.iter().map(|p| p.broker_ids.as_slice()),
                    )
                });
                if let Some(message) = assignment {
                    return result
                        .with_error_code(errors::INVALID_REPLICA_ASSIGNMENT)
                        .with_error_message(Some(str_bytes(&message)));
                }
                match core
                    .topics
                    .add_partitions(&name, wanted.count, request.validate_only)
                {
                    Ok(()) => result,
                    Err(error) => result
                        .with_error_code(code(error.problem()))
                        .with_error_message(Some(str_bytes(&error.to_string()))),
                }
            })
            .collect();
        ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(results))
    })
}

/// Why a manual replica assignment cannot be honoured, if it cannot: partitions must be numbered
/// 0..n in some order, and each must have exactly one replica, this broker.
fn assignment_problem<'a>(
    node_id: i32,
    indexes: &[i32],
    replicas: impl Iterator<Item = &'a [kafka_protocol::messages::BrokerId]>,
) -> Option<String> {
    let mut sorted = indexes.to_vec();
    sorted.sort_unstable();
    if sorted
        .iter()
        .enumerate()
        .any(|(i, p)| i64::from(*p) != i as i64)
    {
        return Some("Partitions should be a consecutive 0-based integer sequence".to_string());
    }
    for brokers in replicas {
        if brokers.len() != 1 || brokers[0].0 != node_id {
            let ids: Vec<String> = brokers.iter().map(|b| b.0.to_string()).collect();
            return Some(format!(
                "replica assignment [{}] cannot be placed: this is a single broker (node {node_id}), so each partition's only replica must be {node_id}",
                ids.join(",")
            ));
        }
    }
    None
}
