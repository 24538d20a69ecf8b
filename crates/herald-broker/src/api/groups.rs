//! The consumer group endpoints: list with state and total lag, describe (members, their
//! assignment, committed and end offsets and lag per partition), reset offsets (a dry run
//! unless asked otherwise) and delete.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState, blocking, json_body};
use crate::Broker;
use crate::group::{CommitPartition, CommitRequest, GroupError, GroupState};
use crate::problem::Problem;

/// The end offset of a partition, if the topic and partition exist.
fn end_offset(broker: &Broker, topic: &str, partition: i32) -> Option<(u64, u64)> {
    let partition = broker.core.topics.get(topic)?.partition(partition)?;
    let offsets = partition.log.offsets();
    Some((offsets.log_start, offsets.visible_end))
}

/// One committed partition of a group: (topic, partition, committed, end, lag).
type PartitionLag = (String, i32, i64, Option<u64>, i64);

fn partition_lags(broker: &Broker, group: &str) -> Vec<PartitionLag> {
    broker
        .core
        .groups
        .fetch_offsets(group, None)
        .into_iter()
        .filter_map(|fetched| {
            let committed = fetched.committed?.offset;
            let end = end_offset(broker, &fetched.topic, fetched.partition).map(|(_, end)| end);
            let lag = end.map_or(0, |end| {
                (i64::try_from(end).unwrap_or(i64::MAX) - committed).max(0)
            });
            Some((fetched.topic, fetched.partition, committed, end, lag))
        })
        .collect()
}

/// Every group's lag per committed partition, for the history.
pub(crate) fn all_lags(broker: &Broker) -> BTreeMap<(String, String, i32), i64> {
    let mut lags = BTreeMap::new();
    for listing in broker.core.groups.list_groups() {
        for (topic, partition, _, _, lag) in partition_lags(broker, &listing.group_id) {
            lags.insert((listing.group_id.clone(), topic, partition), lag);
        }
    }
    lags
}

/// A group in the list.
pub(crate) fn summaries(broker: &Broker) -> Vec<serde_json::Value> {
    broker
        .core
        .groups
        .list_groups()
        .into_iter()
        .map(|listing| {
            let lags = partition_lags(broker, &listing.group_id);
            let members = broker
                .core
                .groups
                .describe_group(&listing.group_id)
                .members
                .len();
            json!({
                "group": listing.group_id,
                "state": listing.state.as_str(),
                "protocol_type": listing.protocol_type,
                "members": members,
                "partitions": lags.len(),
                "lag": lags.iter().map(|l| l.4).sum::<i64>(),
            })
        })
        .collect()
}

/// `GET /api/v1/groups`.
pub(crate) async fn list(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let broker = state.broker.clone();
    let groups = blocking(move || Ok(summaries(&broker))).await?;
    Ok(Json(json!({ "groups": groups })).into_response())
}

/// `GET /api/v1/groups/{group}`.
pub(crate) async fn describe(
    State(state): State<ApiState>,
    Path(group): Path<String>,
) -> Result<Response, ApiError> {
    let broker = state.broker.clone();
    let history = state.history.clone();
    let answer = blocking(move || {
        let description = broker.core.groups.describe_group(&group);
        let lags = partition_lags(&broker, &group);
        if description.state == GroupState::Dead && lags.is_empty() {
            return Err(ApiError::group(&GroupError::GroupIdNotFound));
        }
        let members: Vec<_> = description
            .members
            .iter()
            .map(|member| {
                let assignment = if description.protocol_type == "consumer" {
                    crate::group::assigned_partitions(&member.assignment).unwrap_or_default()
                        .into_iter()
                        .map(|(topic, partitions)| json!({ "topic": topic, "partitions": partitions }))
                        .collect()
                } else {
                    Vec::new()
                };
                json!({
                    "member_id": member.member_id,
                    "group_instance_id": member.group_instance_id,
                    "client_id": member.client_id,
                    "client_host": member.client_host,
                    "assignment": assignment,
                })
            })
            .collect();
        let partitions: Vec<_> = lags
            .iter()
            .map(|(topic, partition, committed, end, lag)| {
                json!({
                    "topic": topic, "partition": partition, "committed": committed,
                    "end": end, "lag": lag,
                })
            })
            .collect();
        let lag_history: Vec<_> = history
            .group_lag(&group)
            .into_iter()
            .map(|((topic, partition), points)| {
                json!({ "topic": topic, "partition": partition, "points": points })
            })
            .collect();
        Ok(json!({
            "group": group,
            "state": description.state.as_str(),
            "generation": description.generation_id,
            "protocol_type": description.protocol_type,
            "protocol": description.protocol_name,
            "members": members,
            "partitions": partitions,
            "lag": lags.iter().map(|l| l.4).sum::<i64>(),
            "lag_history": lag_history,
        }))
    })
    .await?;
    Ok(Json(answer).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetOffsets {
    /// The topic to reset; every topic the group has offsets for when absent.
    topic: Option<String>,
    /// Partitions of `topic`; all of them when absent.
    partitions: Option<Vec<i32>>,
    /// `earliest`, `latest`, `offset` (`value`), `timestamp` (`value` in ms) or `shift` (by
    /// `value`, negative goes back).
    to: String,
    value: Option<i64>,
    /// Only say what would change (the default).
    dry_run: Option<bool>,
}

/// `POST /api/v1/groups/{group}/reset-offsets`: what changes per partition, applied only with
/// `"dry_run": false` and only while the group has no members (as Kafka's tool requires).
pub(crate) async fn reset_offsets(
    State(state): State<ApiState>,
    Path(group): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: ResetOffsets = json_body(body)?;
    let dry_run = request.dry_run.unwrap_or(true);
    let needs_value = matches!(request.to.as_str(), "offset" | "timestamp" | "shift");
    let value = match (request.to.as_str(), request.value) {
        ("earliest" | "latest", _) => 0,
        (_, Some(value)) if needs_value => value,
        (_, None) if needs_value => {
            return Err(ApiError::bad(format!(
                "resetting to `{}` needs a value",
                request.to
            )));
        }
        (other, _) => {
            return Err(ApiError::bad(format!(
                "bad target `{other}`: use earliest, latest, offset, timestamp or shift"
            )));
        }
    };
    let broker = state.broker.clone();
    let group_id = group.clone();
    let plan = blocking(move || {
        let committed: BTreeMap<(String, i32), i64> = partition_lags(&broker, &group_id)
            .into_iter()
            .map(|(topic, partition, committed, _, _)| ((topic, partition), committed))
            .collect();
        let targets: Vec<(String, i32)> = match &request.topic {
            Some(topic) => {
                let found = broker
                    .core
                    .topics
                    .get(topic)
                    .ok_or_else(|| ApiError::unknown_topic(topic))?;
                let count = i32::try_from(found.partition_count()).unwrap_or(i32::MAX);
                match &request.partitions {
                    Some(partitions) => {
                        if let Some(bad) = partitions.iter().find(|p| **p < 0 || **p >= count) {
                            return Err(ApiError::problem(
                                Problem::UnknownTopicOrPartition,
                                format!("topic `{topic}` has no partition {bad}"),
                            ));
                        }
                        partitions.iter().map(|p| (topic.clone(), *p)).collect()
                    }
                    None => (0..count).map(|p| (topic.clone(), p)).collect(),
                }
            }
            None => committed.keys().cloned().collect(),
        };
        let mut plan = Vec::new();
        for (topic, partition) in targets {
            let Some((start, end)) = end_offset(&broker, &topic, partition) else {
                continue;
            };
            let (start, end) = (
                i64::try_from(start).unwrap_or(i64::MAX),
                i64::try_from(end).unwrap_or(i64::MAX),
            );
            let current = committed.get(&(topic.clone(), partition)).copied();
            let target = match request.to.as_str() {
                "earliest" => start,
                "latest" => end,
                "offset" => value,
                "shift" => current.unwrap_or(end).saturating_add(value),
                _ => {
                    let found = broker
                        .core
                        .topics
                        .get(&topic)
                        .and_then(|t| t.partition(partition))
                        .map(|p| p.log.offset_for_timestamp(value));
                    match found {
                        Some(Ok(Some((offset, _)))) => i64::try_from(offset).unwrap_or(end),
                        Some(Err(error)) => {
                            return Err(ApiError::problem(
                                Problem::StorageError,
                                error.to_string(),
                            ));
                        }
                        _ => end,
                    }
                }
            }
            .clamp(start, end);
            plan.push((topic, partition, current, target, end));
        }
        Ok(plan)
    })
    .await?;
    let partitions: Vec<_> = plan
        .iter()
        .map(|(topic, partition, current, target, end)| {
            json!({
                "topic": topic, "partition": partition, "current": current, "target": target,
                "end": end,
                "lag_before": current.map(|c| (end - c).max(0)),
                "lag_after": (end - target).max(0),
            })
        })
        .collect();
    if !dry_run {
        let state_now = state.broker.core.groups.describe_group(&group).state;
        if !matches!(state_now, GroupState::Empty | GroupState::Dead) {
            return Err(
                ApiError::group(&GroupError::NonEmptyGroup).with_message(format!(
                    "group `{group}` is {}: stop its consumers before resetting its offsets",
                    state_now.as_str()
                )),
            );
        }
        let results = state
            .broker
            .core
            .groups
            .commit(CommitRequest {
                group_id: group.clone(),
                generation_id: -1,
                member_id: String::new(),
                group_instance_id: None,
                partitions: plan
                    .iter()
                    .map(|(topic, partition, _, target, _)| CommitPartition {
                        topic: topic.clone(),
                        partition: *partition,
                        offset: *target,
                        leader_epoch: -1,
                        metadata: None,
                    })
                    .collect(),
            })
            .await
            .map_err(|error| ApiError::group(&error))?;
        if let Some(Err(error)) = results.iter().find(|result| result.is_err()) {
            return Err(ApiError::group(error));
        }
    }
    Ok(
        Json(json!({ "group": group, "dry_run": dry_run, "partitions": partitions }))
            .into_response(),
    )
}

/// `DELETE /api/v1/groups/{group}`: only a group without members.
pub(crate) async fn delete(
    State(state): State<ApiState>,
    Path(group): Path<String>,
) -> Result<Response, ApiError> {
    let results = state
        .broker
        .core
        .groups
        .delete_groups(std::slice::from_ref(&group))
        .await;
    match results.into_iter().next() {
        Some(Err(error)) => Err(ApiError::group(&error)),
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
