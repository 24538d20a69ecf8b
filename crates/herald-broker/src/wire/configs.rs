//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics, and DescribeConfigs
//! for the broker itself (read-only: broker settings come from its config file).

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ResponseKind,
    alter_configs_response, incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;

use super::errors::{self, code};
use super::{Reply, blocking, str_bytes};
use crate::Core;
use crate::topic_config::{self, Effect, Kind, Overrides};

/// Config resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// Config resource type of a broker.
const RESOURCE_BROKER: i8 = 4;

/// Config source: set on the topic.
pub(crate) const DYNAMIC_TOPIC_CONFIG: i8 = 1;
/// Config source: the broker's static configuration.
const STATIC_BROKER_CONFIG: i8 = 4;
/// Config source: the built-in default.
pub(crate) const DEFAULT_CONFIG: i8 = 5;

/// Config types (DescribeConfigs v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

const TYPE_DOUBLE: i8 = 6;

fn topic_config_type(name: &str) -> i8 {
    match topic_config::spec(name).map(|spec| spec.kind) {
        Some(Kind::Long { .. }) => TYPE_LONG,
        Some(Kind::Int { .. }) => TYPE_INT,
        Some(Kind::Double { .. }) => TYPE_DOUBLE,
        Some(Kind::Boolean) => TYPE_BOOLEAN,
        Some(Kind::List(_) | Kind::ReplicaList) => TYPE_LIST,
        Some(Kind::Choice(_) | Kind::Version) | None => TYPE_STRING,
    }
}

/// DescribeConfigs' documentation of a topic config: what it does not do on Herald, if so.
fn topic_config_documentation(name: &str) -> Option<String> {
    match topic_config::spec(name)?.effect {
        Effect::Applied => None,
        Effect::None(why) => Some(format!(
            "Accepted for Kafka compatibility; no effect on Herald: {why}."
        )),
    }
}

fn entry(
    name: &str,
    value: Option<String>,
    source: i8,
    read_only: bool,
    config_type: i8,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut result = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(value.as_deref().map(str_bytes))
        .with_read_only(read_only)
        .with_config_source(source);
    if version >= 3 {
        result = result.with_config_type(config_type);
    }
    result
}

/// The broker settings a client may ask about, under their Kafka names.
fn broker_entries(core: &Core) -> Vec<(&'static str, String, i8)> {
    let config = &core.config;
    vec![
        (
            "auto.create.topics.enable",
            config.auto_create_topics_enable.to_string(),
            TYPE_BOOLEAN,
        ),
        ("broker.id", config.node_id.to_string(), TYPE_INT),
        (
            "log.flush.interval.ms",
            config.log_flush_ms.to_string(),
            TYPE_LONG,
        ),
        (
            "log.retention.bytes",
            config.log_retention_bytes.to_string(),
            TYPE_LONG,
        ),
        (
            "log.retention.ms",
            config.log_retention_ms.to_string(),
            TYPE_LONG,
        ),
        ("log.roll.ms", config.log_segment_ms.to_string(), TYPE_LONG),
        (
            "log.segment.bytes",
            config.log_segment_bytes.to_string(),
            TYPE_INT,
        ),
        (
            "max.connections",
            config.connections_max.to_string(),
            TYPE_INT,
        ),
        (
            "message.max.bytes",
            config.message_bytes_max.to_string(),
            TYPE_INT,
        ),
        ("node.id", config.node_id.to_string(), TYPE_INT),
        (
            "num.partitions",
            config.num_partitions.to_string(),
            TYPE_INT,
        ),
        (
            "socket.request.max.bytes",
            config.request_bytes_max.to_string(),
            TYPE_INT,
        ),
        ("cluster.id", config.cluster_id.clone(), TYPE_STRING),
    ]
}

fn wanted(keys: &Option<Vec<StrBytes>>, name: &str) -> bool {
    keys.as_ref()
        .is_none_or(|keys| keys.iter().any(|key| key.as_str() == name))
}

pub(crate) fn describe_configs(
    core: &Core,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let include_documentation = request.include_documentation;
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match resource.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = core.topics.get(resource.resource_name.as_str()) else {
                        return result
                            .with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_error_message(Some(str_bytes("unknown topic")));
                    };
                    let overrides = topic.overrides();
                    let configs = topic_config::SPECS
                        .iter()
                        .map(|spec| spec.name)
                        .filter(|name| wanted(&resource.configuration_keys, name))
                        .map(|name| {
                            let source = if overrides.contains_key(name) {
                                DYNAMIC_TOPIC_CONFIG
                            } else {
                                DEFAULT_CONFIG
                            };
                            let mut entry = entry(
                                name,
                                topic_config::value(&core.config, &overrides, name),
                                source,
                                false,
                                topic_config_type(name),
                                version,
                            );
                            if version >= 3 && include_documentation {
                                entry.documentation =
                                    topic_config_documentation(name).map(|d| str_bytes(&d));
                            }
                            entry
                        })
                        .collect();
                    result.with_configs(configs)
                }
                RESOURCE_BROKER => {
                    let name = resource.resource_name.as_str();
                    if !name.is_empty() && name != core.config.node_id.to_string() {
                        return result
                            .with_error_code(errors::INVALID_REQUEST)
                            .with_error_message(Some(str_bytes("unknown broker id")));
                    }
                    let configs = broker_entries(core)
                        .into_iter()
                        .filter(|(name, _, _)| wanted(&resource.configuration_keys, name))
                        .map(|(name, value, config_type)| {
                            entry(
                                name,
                                Some(value),
                                STATIC_BROKER_CONFIG,
                                true,
                                config_type,
                                version,
                            )
                        })
                        .collect();
                    result.with_configs(configs)
                }
                other => result
                    .with_error_code(errors::INVALID_REQUEST)
                    .with_error_message(Some(str_bytes(&format!(
                        "config resource type {other} is not served"
                    )))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// The outcome of altering one resource: error code and message.
type Outcome = (i16, Option<String>);

fn apply(
    core: &Core,
    resource_type: i8,
    name: &str,
    overrides: Result<Overrides, String>,
    validate_only: bool,
) -> Outcome {
    match resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            return (
                errors::INVALID_REQUEST,
                Some("broker settings are read-only at runtime; change the config file".into()),
            );
        }
        other => {
            return (
                errors::INVALID_REQUEST,
                Some(format!("config resource type {other} is not served")),
            );
        }
    }
    let overrides = match overrides {
        Ok(overrides) => overrides,
        Err(message) => return (errors::INVALID_CONFIG, Some(message)),
    };
    match core.topics.set_overrides(name, overrides, validate_only) {
        Ok(()) => (errors::NONE, None),
        Err(error) => (code(error.problem()), Some(error.to_string())),
    }
}

pub(crate) fn alter_configs(core: &Arc<Core>, request: AlterConfigsRequest) -> Reply {
    blocking(core, move |core| {
        let responses = request
            .resources
            .into_iter()
            .map(|resource| {
                // AlterConfigs replaces the whole set: what is not named returns to the default.
                let overrides: Overrides = resource
                    .configs
                    .iter()
                    .filter_map(|config| {
                        let value = config.value.as_ref()?;
                        Some((config.name.as_str().to_string(), value.as_str().to_string()))
                    })
                    .collect();
                let (error_code, message) = apply(
                    &core,
                    resource.resource_type,
                    resource.resource_name.as_str(),
                    Ok(overrides),
                    request.validate_only,
                );
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_error_code(error_code)
                    .with_error_message(message.as_deref().map(str_bytes))
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name)
            })
            .collect();
        ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(responses))
    })
}

/// Applies IncrementalAlterConfigs operations to a topic's current overrides.
fn incremental(
    core: &Core,
    topic: &str,
    configs: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<Overrides, String> {
    let mut overrides = core
        .topics
        .get(topic)
        .map(|topic| topic.overrides())
        .unwrap_or_default();
    for config in configs {
        let name = config.name.as_str();
        let value = config
            .value
            .as_ref()
            .map(|value| value.as_str().to_string());
        match config.config_operation {
            OP_SET => {
                let value = value.ok_or_else(|| format!("{name}: SET needs a value"))?;
                overrides.insert(name.to_string(), value);
            }
            OP_DELETE => {
                overrides.remove(name);
            }
            OP_APPEND | OP_SUBTRACT => {
                if topic_config_type(name) != TYPE_LIST {
                    return Err(format!(
                        "{name} is not a list; APPEND and SUBTRACT do not apply"
                    ));
                }
                let value = value.ok_or_else(|| format!("{name}: needs a value"))?;
                let current =
                    topic_config::value(&core.config, &overrides, name).unwrap_or_default();
                let mut items: Vec<String> = current
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_string)
                    .collect();
                for item in value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                {
                    if config.config_operation == OP_APPEND {
                        if !items.iter().any(|existing| existing == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|existing| existing != item);
                    }
                }
                overrides.insert(name.to_string(), items.join(","));
            }
            other => return Err(format!("unknown config operation {other}")),
        }
    }
    Ok(overrides)
}

pub(crate) fn incremental_alter_configs(
    core: &Arc<Core>,
    request: IncrementalAlterConfigsRequest,
) -> Reply {
    blocking(core, move |core| {
        let responses = request
            .resources
            .into_iter()
            .map(|resource| {
                let name = resource.resource_name.as_str();
                let overrides = incremental(&core, name, &resource.configs);
                let (error_code, message) = apply(
                    &core,
                    resource.resource_type,
                    name,
                    overrides,
                    request.validate_only,
                );
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_error_code(error_code)
                    .with_error_message(message.as_deref().map(str_bytes))
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name)
            })
            .collect();
        ResponseKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsResponse::default().with_responses(responses),
        )
    })
}
