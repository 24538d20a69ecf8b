//! `/api/v1/broker`, `/api/v1/history` and the topic endpoints: list, create, describe, alter
//! configs, add partitions, delete (with the name repeated) and delete records.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ApiError, ApiState, blocking, find_partition, json_body};
use crate::problem::Problem;
use crate::topic_config;

/// `GET /api/v1/broker`: version, uptime, listeners, data directory use and throughput now.
pub(crate) async fn broker(State(state): State<ApiState>) -> Response {
    axum::Json(broker_summary(&state)).into_response()
}

pub(crate) fn broker_summary(state: &ApiState) -> serde_json::Value {
    let broker = &state.broker;
    let stats = broker.stats();
    let listeners: Vec<_> = broker
        .listeners()
        .into_iter()
        .map(|(name, protocol, addr)| {
            json!({ "name": name, "protocol": protocol.to_string(), "addr": addr.to_string() })
        })
        .collect();
    let latest = state.history.latest();
    let stopping = *broker.core.stopping.borrow();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": u64::try_from(state.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "status": if stopping { "stopping" } else { "ok" },
        "listeners": listeners,
        "insecure_listeners": broker.insecure_listeners(),
        "acls_enforced": broker.acls_enforced(),
        "data_dir": broker.core.config.data_dir.display().to_string(),
        "disk_bytes": stats.disk_bytes,
        "topics": stats.topics,
        "partitions": stats.partitions,
        "partitions_loading": stats.partitions_loading,
        "connections_open": stats.connections_open,
        "groups": broker.core.groups.list_groups().len(),
        "throughput": {
            "bytes_in_per_s": latest.map_or(0.0, |s| s.bytes_in_per_s),
            "bytes_out_per_s": latest.map_or(0.0, |s| s.bytes_out_per_s),
            "records_in_per_s": latest.map_or(0.0, |s| s.records_in_per_s),
            "records_out_per_s": latest.map_or(0.0, |s| s.records_out_per_s),
        },
        "produced_bytes_total": stats.produced_bytes_total,
        "fetched_bytes_total": stats.fetched_bytes_total,
    })
}

/// `GET /api/v1/history`: the broker-wide samples of the last hour.
pub(crate) async fn history(State(state): State<ApiState>) -> Response {
    axum::Json(json!({
        "sample_ms": super::history::SAMPLE_MS,
        "samples": state.history.samples(),
    }))
    .into_response()
}

/// One topic in the list.
#[derive(Debug, Serialize)]
pub(crate) struct TopicSummary {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) partitions: usize,
    /// Bytes on disk of the partitions open (all of them once the broker has finished
    /// opening its logs after a start).
    pub(crate) size_bytes: u64,
    /// Records between the log starts and ends.
    pub(crate) messages: u64,
    pub(crate) retention_ms: Option<i64>,
    pub(crate) records_in_per_s: f64,
    pub(crate) records_out_per_s: f64,
    pub(crate) bytes_in_per_s: f64,
    pub(crate) bytes_out_per_s: f64,
}

pub(crate) fn summaries(state: &ApiState) -> Vec<TopicSummary> {
    let broker = &state.broker;
    broker
        .core
        .topics
        .list()
        .into_iter()
        .map(|topic| {
            let (mut size_bytes, mut messages) = (0, 0);
            for partition in topic.loaded_partitions() {
                size_bytes += partition.log.size_bytes();
                let offsets = partition.log.offsets();
                messages += offsets.visible_end.saturating_sub(offsets.log_start);
            }
            let retention_ms = topic_config::value(
                &broker.core.config,
                &topic.overrides(),
                topic_config::RETENTION_MS,
            )
            .and_then(|value| value.parse().ok());
            let rate = state.history.topic_rate(&topic.name).unwrap_or_default();
            TopicSummary {
                id: topic.id.to_string(),
                partitions: topic.partition_count(),
                size_bytes,
                messages,
                retention_ms,
                records_in_per_s: rate.records_in_per_s,
                records_out_per_s: rate.records_out_per_s,
                bytes_in_per_s: rate.bytes_in_per_s,
                bytes_out_per_s: rate.bytes_out_per_s,
                name: topic.name.clone(),
            }
        })
        .collect()
}

/// `GET /api/v1/topics`.
pub(crate) async fn list(State(state): State<ApiState>) -> Response {
    Json(json!({ "topics": summaries(&state) })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTopic {
    name: String,
    /// Partitions; the broker default when absent.
    partitions: Option<i32>,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// `POST /api/v1/topics`: `{"name", "partitions", "configs"}`.
pub(crate) async fn create(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CreateTopic = json_body(body)?;
    let broker = state.broker.clone();
    let name = request.name.clone();
    blocking(move || {
        broker
            .core
            .topics
            .create(
                &request.name,
                request.partitions.unwrap_or(-1),
                -1,
                request.configs,
                false,
            )
            .map(|_| ())
            .map_err(|error| ApiError::problem(error.problem(), error.to_string()))
    })
    .await?;
    let detail = topic_detail(&state, &name).await?;
    Ok((StatusCode::CREATED, Json(detail)).into_response())
}

/// `GET /api/v1/topics/{topic}`: partitions with offsets and sizes, and every config.
pub(crate) async fn describe(
    State(state): State<ApiState>,
    Path(topic): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(topic_detail(&state, &topic).await?).into_response())
}

async fn topic_detail(state: &ApiState, name: &str) -> Result<serde_json::Value, ApiError> {
    let broker = state.broker.clone();
    let name = name.to_string();
    blocking(move || {
        let topic = broker
            .core
            .topics
            .get(&name)
            .ok_or_else(|| ApiError::unknown_topic(&name))?;
        let partitions: Vec<_> = topic
            .partitions()
            .iter()
            .map(|partition| {
                let offsets = partition.log.offsets();
                json!({
                    "partition": partition.index,
                    "log_start": offsets.log_start,
                    "high_watermark": offsets.visible_end,
                    "messages": offsets.visible_end.saturating_sub(offsets.log_start),
                    "size_bytes": partition.log.size_bytes(),
                })
            })
            .collect();
        let overrides = topic.overrides();
        let configs: Vec<_> = topic_config::SPECS
            .iter()
            .map(|spec| {
                json!({
                    "name": spec.name,
                    "value": topic_config::value(&broker.core.config, &overrides, spec.name),
                    "overridden": overrides.contains_key(spec.name),
                })
            })
            .collect();
        Ok(json!({
            "name": topic.name,
            "id": topic.id.to_string(),
            "partitions": partitions,
            "configs": configs,
        }))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlterConfigs {
    /// Configs to set.
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Configs to return to the broker default.
    #[serde(default)]
    delete: Vec<String>,
}

/// `PATCH /api/v1/topics/{topic}/configs`: `{"set": {...}, "delete": [...]}`.
pub(crate) async fn alter_configs(
    State(state): State<ApiState>,
    Path(topic): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: AlterConfigs = json_body(body)?;
    let broker = state.broker.clone();
    let name = topic.clone();
    blocking(move || {
        let found = broker
            .core
            .topics
            .get(&name)
            .ok_or_else(|| ApiError::unknown_topic(&name))?;
        let mut overrides = found.overrides();
        for key in &request.delete {
            overrides.remove(key);
        }
        overrides.extend(request.set);
        broker
            .core
            .topics
            .set_overrides(&name, overrides, false)
            .map_err(|error| ApiError::problem(error.problem(), error.to_string()))
    })
    .await?;
    Ok(Json(topic_detail(&state, &topic).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddPartitions {
    /// The new total.
    count: i32,
}

/// `POST /api/v1/topics/{topic}/partitions`: `{"count": new_total}`.
pub(crate) async fn add_partitions(
    State(state): State<ApiState>,
    Path(topic): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: AddPartitions = json_body(body)?;
    let broker = state.broker.clone();
    let name = topic.clone();
    blocking(move || {
        broker
            .core
            .topics
            .add_partitions(&name, request.count, false)
            .map_err(|error| ApiError::problem(error.problem(), error.to_string()))
    })
    .await?;
    Ok(Json(topic_detail(&state, &topic).await?).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeleteQuery {
    /// The topic's name again, so a slip of the hand deletes nothing.
    confirm: Option<String>,
}

/// `DELETE /api/v1/topics/{topic}?confirm={topic}`.
pub(crate) async fn delete(
    State(state): State<ApiState>,
    Path(topic): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Result<Response, ApiError> {
    if query.confirm.as_deref() != Some(topic.as_str()) {
        return Err(ApiError::bad(
            "deleting a topic needs its name repeated as ?confirm=<topic>",
        ));
    }
    let broker = state.broker.clone();
    blocking(move || {
        broker
            .core
            .topics
            .delete(&topic)
            .map_err(|error| ApiError::problem(error.problem(), error.to_string()))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteRecords {
    /// Records below this offset go.
    before_offset: u64,
}

/// `POST /api/v1/topics/{topic}/partitions/{partition}/delete-records`:
/// `{"before_offset": n}`; answers the new log start.
pub(crate) async fn delete_records(
    State(state): State<ApiState>,
    Path((topic, partition)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: DeleteRecords = json_body(body)?;
    let broker = state.broker.clone();
    let log_start = blocking(move || {
        let partition = find_partition(&broker, &topic, &partition)?;
        partition
            .log
            .delete_records_before(request.before_offset)
            .map_err(|error| {
                let problem = match error {
                    herald_storage::DeleteRecordsError::OffsetOutOfRange { .. } => {
                        Problem::OffsetOutOfRange
                    }
                    herald_storage::DeleteRecordsError::Deleted => Problem::UnknownTopicOrPartition,
                    _ => Problem::StorageError,
                };
                ApiError::problem(problem, error.to_string())
            })
    })
    .await?;
    Ok(Json(json!({ "log_start": log_start })).into_response())
}
