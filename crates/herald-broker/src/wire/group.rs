//! Kafka consumer-group requests mapped onto the coordinator: FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups,
//! DeleteGroups and OffsetDelete. The only place group requests and responses meet
//! `kafka_protocol` types, and the only place coordinator errors become Kafka error codes.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::sync::Arc;

use super::Reply;
use super::codec::{self, Request};
use super::errors::{self, group_code};
use super::sasl::Session;
use crate::Core;

use crate::group::{
    CommitPartition, CommitRequest, Coordinator, FetchedOffset, GroupError, GroupState,
    JoinRequest, JoinResponse, LeaveMember, Protocol, SyncRequest,
};

/// Who sent a request: the header's client id and the peer address, as groups report members.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: String,
    /// The peer's address as Kafka prints it (`/127.0.0.1`).
    pub client_host: String,
}

/// Where clients reach this broker, for FindCoordinator.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

fn code_of(result: &Result<(), GroupError>) -> i16 {
    result.as_ref().map_or_else(group_code, |()| 0)
}

fn s(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn opt(value: &Option<StrBytes>) -> Option<String> {
    value.as_ref().map(|v| v.to_string())
}

/// Whether `api_key` is a consumer-group API, answered by [`dispatch`].
pub(crate) fn handles(api_key: ApiKey) -> bool {
    matches!(
        api_key,
        ApiKey::FindCoordinator
            | ApiKey::JoinGroup
            | ApiKey::SyncGroup
            | ApiKey::Heartbeat
            | ApiKey::LeaveGroup
            | ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::ListGroups
            | ApiKey::DescribeGroups
            | ApiKey::DeleteGroups
            | ApiKey::OffsetDelete
    )
}

/// Answers a consumer-group request (one for which [`handles`] is true).
///
/// JoinGroup, SyncGroup and the offset writes wait (for the rest of the group, for fsync), so
/// they answer later; the rest answer at once. Every request's effect on the coordinator is
/// applied (or queued, for offsets) before this returns, so one connection's requests take
/// effect in the order it sent them, as Kafka applies them; only the waiting runs on its own
/// task. An OffsetFetch waits for the commits queued before it, so it sees them.
pub(crate) async fn dispatch(core: &Arc<Core>, request: Request, session: &Session) -> Reply {
    let (peer, listener) = (session.peer, &*session.listener);
    let version = request.header.request_api_version;
    let coordinator = core.groups.clone();
    let ready = |body: ResponseKind| Reply::Ready(Box::new(body));
    match request.body {
        RequestKind::FindCoordinator(req) => {
            let node = NodeInfo {
                node_id: core.config.node_id,
                host: listener.advertised.0.clone(),
                port: listener.advertised.1,
            };
            ready(ResponseKind::FindCoordinator(find_coordinator(
                &node, version, req,
            )))
        }
        RequestKind::JoinGroup(req) => {
            let client = ClientInfo {
                client_id: codec::client_id(&request.header).to_string(),
                client_host: format!("/{}", peer.ip()),
            };
            let joined = join_group(&coordinator, &client, version, req);
            Reply::Later(Box::pin(
                async move { ResponseKind::JoinGroup(joined.await) },
            ))
        }
        RequestKind::SyncGroup(req) => {
            let synced = sync_group(&coordinator, version, req);
            Reply::Later(Box::pin(
                async move { ResponseKind::SyncGroup(synced.await) },
            ))
        }
        RequestKind::Heartbeat(req) => ready(ResponseKind::Heartbeat(heartbeat(&coordinator, req))),
        RequestKind::LeaveGroup(req) => ready(ResponseKind::LeaveGroup(leave_group(
            &coordinator,
            version,
            req,
        ))),
        RequestKind::OffsetCommit(req) => {
            let committed = offset_commit(&coordinator, req).await;
            Reply::Later(Box::pin(async move {
                ResponseKind::OffsetCommit(committed.await)
            }))
        }
        RequestKind::OffsetFetch(req) => {
            let barrier = coordinator.commit_barrier().await;
            Reply::Later(Box::pin(async move {
                // A failed store still answers with what is durable.
                if let Ok(barrier) = barrier {
                    let _ = barrier.wait().await;
                }
                ResponseKind::OffsetFetch(offset_fetch(&coordinator, version, req))
            }))
        }
        RequestKind::ListGroups(req) => {
            ready(ResponseKind::ListGroups(list_groups(&coordinator, req)))
        }
        RequestKind::DescribeGroups(req) => ready(ResponseKind::DescribeGroups(describe_groups(
            &coordinator,
            req,
            |group| super::metadata::group_operations(core, session, group),
        ))),
        RequestKind::DeleteGroups(req) => Reply::Later(Box::pin(async move {
            ResponseKind::DeleteGroups(delete_groups(&coordinator, req).await)
        })),
        RequestKind::OffsetDelete(req) => Reply::Later(Box::pin(async move {
            ResponseKind::OffsetDelete(offset_delete(&coordinator, req).await)
        })),
        _ => {
            tracing::warn!(api = ?request.api_key, "not a consumer-group request");
            Reply::Nothing
        }
    }
}

/// FindCoordinator: this broker coordinates every consumer group and every transactional id;
/// share groups are refused with an error instead of leaving the client waiting.
pub fn find_coordinator(
    node: &NodeInfo,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    // key_type 0 is a group, 1 a transactional id (v1+), 2 a share group.
    let answer = |key: StrBytes| -> CoordinatorEntry {
        let mut c = CoordinatorEntry::default();
        c.key = key;
        if request.key_type == 0 || request.key_type == 1 {
            c.node_id = BrokerId(node.node_id);
            c.host = s(&node.host);
            c.port = node.port;
        } else {
            c.node_id = BrokerId(-1);
            c.error_code = errors::INVALID_REQUEST;
            c.error_message = Some(s(
                "this broker does not support share groups; only consumer group coordinators",
            ));
        }
        c
    };
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = request
            .coordinator_keys
            .iter()
            .cloned()
            .map(answer)
            .collect();
    } else {
        let c = answer(request.key.clone());
        response.error_code = c.error_code;
        response.error_message = c.error_message;
        response.node_id = c.node_id;
        response.host = c.host;
        response.port = c.port;
    }
    response
}

/// JoinGroup (v0..v9): applies the join at once, then waits until the rebalance completes.
pub fn join_group(
    coordinator: &Coordinator,
    client: &ClientInfo,
    version: i16,
    request: JoinGroupRequest,
) -> impl Future<Output = JoinGroupResponse> + Send + 'static {
    let requested_member = request.member_id.to_string();
    let join = JoinRequest {
        group_id: request.group_id.to_string(),
        member_id: requested_member.clone(),
        group_instance_id: opt(&request.group_instance_id),
        client_id: client.client_id.clone(),
        client_host: client.client_host.clone(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout; Kafka uses the session timeout for it.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| Protocol {
                name: p.name.to_string(),
                metadata: p.metadata.clone(),
            })
            .collect(),
        require_known_member_id: version >= 4,
        skip_assignment_supported: version >= 9,
    };
    let pending = coordinator.join_start(join);
    async move { join_response(version, requested_member, pending.get().await) }
}

fn join_response(
    version: i16,
    requested_member: String,
    joined: Result<JoinResponse, GroupError>,
) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default();
    match joined {
        Ok(joined) => {
            response.generation_id = joined.generation_id;
            response.protocol_type = joined.protocol_type.map(StrBytes::from_string);
            response.protocol_name = Some(s(&joined.protocol_name.unwrap_or_default()));
            response.leader = s(&joined.leader_id);
            response.skip_assignment = joined.skip_assignment;
            response.member_id = s(&joined.member_id);
            response.members = joined
                .members
                .into_iter()
                .map(|m| {
                    let mut member = JoinGroupResponseMember::default();
                    member.member_id = s(&m.member_id);
                    member.group_instance_id = m.group_instance_id.map(StrBytes::from_string);
                    member.metadata = m.metadata;
                    member
                })
                .collect();
        }
        Err(error) => {
            response.error_code = group_code(&error);
            response.generation_id = -1;
            response.protocol_name = if version >= 7 { None } else { Some(s("")) };
            response.member_id = match error {
                GroupError::MemberIdRequired(id) => s(&id),
                _ => s(&requested_member),
            };
        }
    }
    response
}

/// SyncGroup (v0..v5): applies the sync at once; followers then wait for the leader's
/// assignment.
pub fn sync_group(
    coordinator: &Coordinator,
    _version: i16,
    request: SyncGroupRequest,
) -> impl Future<Output = SyncGroupResponse> + Send + 'static {
    let sync = SyncRequest {
        group_id: request.group_id.to_string(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: opt(&request.group_instance_id),
        protocol_type: opt(&request.protocol_type),
        protocol_name: opt(&request.protocol_name),
        assignments: request
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let pending = coordinator.sync_start(sync);
    async move {
        let mut response = SyncGroupResponse::default();
        match pending.get().await {
            Ok(synced) => {
                response.protocol_type = synced.protocol_type.map(StrBytes::from_string);
                response.protocol_name = synced.protocol_name.map(StrBytes::from_string);
                response.assignment = synced.assignment;
            }
            Err(error) => response.error_code = group_code(&error),
        }
        response
    }
}

/// Heartbeat (v0..v4).
pub fn heartbeat(coordinator: &Coordinator, request: HeartbeatRequest) -> HeartbeatResponse {
    let result = coordinator.heartbeat(
        &request.group_id,
        request.generation_id,
        &request.member_id,
        request.group_instance_id.as_deref(),
    );
    let mut response = HeartbeatResponse::default();
    response.error_code = code_of(&result);
    response
}

/// LeaveGroup (v0..v5; one member before v3, a batch after).
pub fn leave_group(
    coordinator: &Coordinator,
    version: i16,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let members: Vec<LeaveMember> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| LeaveMember {
                member_id: m.member_id.to_string(),
                group_instance_id: opt(&m.group_instance_id),
            })
            .collect()
    } else {
        vec![LeaveMember {
            member_id: request.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let mut response = LeaveGroupResponse::default();
    match coordinator.leave(&request.group_id, &members) {
        Ok(results) => {
            if version >= 3 {
                response.members = members
                    .iter()
                    .zip(&results)
                    .map(|(m, r)| {
                        let mut member = MemberResponse::default();
                        member.member_id = s(&m.member_id);
                        member.group_instance_id =
                            m.group_instance_id.clone().map(StrBytes::from_string);
                        member.error_code = code_of(r);
                        member
                    })
                    .collect();
            } else {
                response.error_code = results.first().map_or(0, code_of);
            }
        }
        Err(error) => response.error_code = group_code(&error),
    }
    response
}

/// OffsetCommit (v2..v8): answers once the offsets are durable.
///
/// The commit is checked and queued for the store before this returns (waiting only for room
/// in the store's queue), so commits take effect in the order their connection sent them; the
/// returned future waits until they are durable.
pub async fn offset_commit(
    coordinator: &Coordinator,
    request: OffsetCommitRequest,
) -> impl Future<Output = OffsetCommitResponse> + Send + 'static {
    let mut shape: Vec<(TopicName, Vec<i32>)> = Vec::new();
    let mut partitions = Vec::new();
    for topic in &request.topics {
        shape.push((
            topic.name.clone(),
            topic.partitions.iter().map(|p| p.partition_index).collect(),
        ));
        for p in &topic.partitions {
            partitions.push(CommitPartition {
                topic: topic.name.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: opt(&p.committed_metadata),
            });
        }
    }
    let commit = CommitRequest {
        group_id: request.group_id.to_string(),
        generation_id: request.generation_id_or_member_epoch,
        member_id: request.member_id.to_string(),
        group_instance_id: opt(&request.group_instance_id),
        partitions,
    };
    let started = coordinator.commit_start(commit).await;
    async move {
        let codes: Vec<i16> = match started {
            Ok(pending) => pending.wait().await.iter().map(code_of).collect(),
            Err(error) => vec![group_code(&error); shape.iter().map(|(_, p)| p.len()).sum()],
        };
        commit_response(shape, codes)
    }
}

fn commit_response(shape: Vec<(TopicName, Vec<i32>)>, codes: Vec<i16>) -> OffsetCommitResponse {
    let mut codes = codes.into_iter();
    let mut response = OffsetCommitResponse::default();
    response.topics = shape
        .into_iter()
        .map(|(name, indexes)| {
            let mut topic = OffsetCommitResponseTopic::default();
            topic.name = name;
            topic.partitions = indexes
                .into_iter()
                .map(|index| {
                    let mut p = OffsetCommitResponsePartition::default();
                    p.partition_index = index;
                    p.error_code = codes.next().unwrap_or(0);
                    p
                })
                .collect();
            topic
        })
        .collect();
    response
}

/// Groups committed offsets by topic in the order they came.
fn by_topic(fetched: Vec<FetchedOffset>) -> Vec<(String, Vec<FetchedOffset>)> {
    let mut topics: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for f in fetched {
        match topics.iter_mut().find(|(t, _)| *t == f.topic) {
            Some((_, list)) => list.push(f),
            None => topics.push((f.topic.clone(), vec![f])),
        }
    }
    topics
}

fn committed_fields(f: &FetchedOffset) -> (i64, i32, String) {
    match &f.committed {
        Some(c) => (c.offset, c.leader_epoch, c.metadata.clone()),
        None => (-1, -1, String::new()),
    }
}

/// OffsetFetch (v1..v8; v8 batches groups). A partition without a commit reads as offset -1.
pub fn offset_fetch(
    coordinator: &Coordinator,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        response.groups = request
            .groups
            .iter()
            .map(|g| {
                let wanted: Option<Vec<(String, i32)>> = g.topics.as_ref().map(|topics| {
                    topics
                        .iter()
                        .flat_map(|t| t.partition_indexes.iter().map(|p| (t.name.to_string(), *p)))
                        .collect()
                });
                let fetched = coordinator.fetch_offsets(&g.group_id, wanted.as_deref());
                let mut group = OffsetFetchResponseGroup::default();
                group.group_id = g.group_id.clone();
                group.topics = by_topic(fetched)
                    .into_iter()
                    .map(|(name, list)| {
                        let mut topic = OffsetFetchResponseTopics::default();
                        topic.name = TopicName(s(&name));
                        topic.partitions = list
                            .iter()
                            .map(|f| {
                                let (offset, epoch, metadata) = committed_fields(f);
                                let mut p = OffsetFetchResponsePartitions::default();
                                p.partition_index = f.partition;
                                p.committed_offset = offset;
                                p.committed_leader_epoch = epoch;
                                p.metadata = Some(StrBytes::from_string(metadata));
                                p
                            })
                            .collect();
                        topic
                    })
                    .collect();
                group
            })
            .collect();
        return response;
    }
    let wanted: Option<Vec<(String, i32)>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partition_indexes.iter().map(|p| (t.name.to_string(), *p)))
            .collect()
    });
    let fetched = coordinator.fetch_offsets(&request.group_id, wanted.as_deref());
    response.topics = by_topic(fetched)
        .into_iter()
        .map(|(name, list)| {
            let mut topic = OffsetFetchResponseTopic::default();
            topic.name = TopicName(s(&name));
            topic.partitions = list
                .iter()
                .map(|f| {
                    let (offset, epoch, metadata) = committed_fields(f);
                    let mut p = OffsetFetchResponsePartition::default();
                    p.partition_index = f.partition;
                    p.committed_offset = offset;
                    p.committed_leader_epoch = epoch;
                    p.metadata = Some(StrBytes::from_string(metadata));
                    p
                })
                .collect();
            topic
        })
        .collect();
    response
}

/// ListGroups (v0..v5), honouring the v4 state filter and the v5 type filter.
pub fn list_groups(coordinator: &Coordinator, request: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let mut response = ListGroupsResponse::default();
    response.groups = coordinator
        .list_groups()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.as_str().to_ascii_lowercase()))
        // Every group here speaks the classic protocol.
        .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|g| {
            let mut listed = ListedGroup::default();
            listed.group_id = GroupId(s(&g.group_id));
            listed.protocol_type = s(&g.protocol_type);
            listed.group_state = s(g.state.as_str());
            listed.group_type = s("classic");
            listed
        })
        .collect();
    response
}

/// DescribeGroups (v0..v5). A group that does not exist is described as Dead, as Kafka does.
pub fn describe_groups(
    coordinator: &Coordinator,
    request: DescribeGroupsRequest,
    operations: impl Fn(&str) -> i32,
) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    response.groups = request
        .groups
        .iter()
        .map(|id| {
            let d = coordinator.describe_group(id);
            let mut group = DescribedGroup::default();
            group.group_id = id.clone();
            group.group_state = s(d.state.as_str());
            group.protocol_type = s(&d.protocol_type);
            group.protocol_data = s(&d.protocol_name);
            group.authorized_operations = if request.include_authorized_operations {
                operations(id.as_str())
            } else {
                super::metadata::OPERATIONS_NOT_ASKED
            };
            group.members = d
                .members
                .into_iter()
                .map(|m| {
                    let mut member = DescribedGroupMember::default();
                    member.member_id = s(&m.member_id);
                    member.group_instance_id = m.group_instance_id.map(StrBytes::from_string);
                    member.client_id = s(&m.client_id);
                    member.client_host = s(&m.client_host);
                    member.member_metadata = m.metadata;
                    member.member_assignment = if d.state == GroupState::Stable {
                        m.assignment
                    } else {
                        bytes::Bytes::new()
                    };
                    member
                })
                .collect();
            group
        })
        .collect();
    response
}

/// DeleteGroups (v0..v2): only Empty groups; their offsets go with them.
pub async fn delete_groups(
    coordinator: &Coordinator,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let ids: Vec<String> = request.groups_names.iter().map(|g| g.to_string()).collect();
    let results = coordinator.delete_groups(&ids).await;
    let mut response = DeleteGroupsResponse::default();
    response.results = request
        .groups_names
        .into_iter()
        .zip(&results)
        .map(|(id, r)| {
            let mut result = DeletableGroupResult::default();
            result.group_id = id;
            result.error_code = code_of(r);
            result
        })
        .collect();
    response
}

/// OffsetDelete (v0): removes offsets of topics the group is not subscribed to.
pub async fn offset_delete(
    coordinator: &Coordinator,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    let mut response = OffsetDeleteResponse::default();
    let results = match coordinator
        .delete_offsets(&request.group_id, &partitions)
        .await
    {
        Ok(results) => results,
        Err(error) => {
            response.error_code = group_code(&error);
            return response;
        }
    };
    let mut results = results.iter();
    response.topics = request
        .topics
        .iter()
        .map(|t| {
            let mut topic = OffsetDeleteResponseTopic::default();
            topic.name = t.name.clone();
            topic.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut out = OffsetDeleteResponsePartition::default();
                    out.partition_index = p.partition_index;
                    out.error_code = results.next().map_or(0, code_of);
                    out
                })
                .collect();
            topic
        })
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_distinct_meaningful_code() {
        assert_eq!(group_code(&GroupError::UnknownMemberId), 25);
        assert_eq!(group_code(&GroupError::MemberIdRequired(String::new())), 79);
        assert_eq!(group_code(&GroupError::RebalanceInProgress), 27);
        assert_eq!(group_code(&GroupError::IllegalGeneration), 22);
        assert_eq!(group_code(&GroupError::FencedInstanceId), 82);
        assert_eq!(group_code(&GroupError::NonEmptyGroup), 68);
        assert_eq!(group_code(&GroupError::GroupIdNotFound), 69);
        assert_eq!(group_code(&GroupError::InconsistentGroupProtocol), 23);
    }

    #[test]
    fn transaction_keys_are_coordinated_here() {
        let node = NodeInfo {
            node_id: 1,
            host: "127.0.0.1".into(),
            port: 9092,
        };
        let mut request = FindCoordinatorRequest::default();
        request.key_type = 1;
        request.coordinator_keys = vec![s("txn"), s("txn2")];
        let response = find_coordinator(&node, 4, request.clone());
        assert_eq!(response.coordinators.len(), 2);
        assert!(
            response
                .coordinators
                .iter()
                .all(|c| c.error_code == 0 && c.node_id == BrokerId(1))
        );
        request.key_type = 0;
        request.key = s("g");
        let response = find_coordinator(&node, 2, request);
        assert_eq!(response.error_code, 0);
        assert_eq!(response.node_id, BrokerId(1));
        assert_eq!(response.port, 9092);
    }
}
