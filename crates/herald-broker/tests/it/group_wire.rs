//! The group APIs at the highest versions this broker advertises (newer than librdkafka
//! negotiates, as Java clients use them), over raw frames: batched FindCoordinator, JoinGroup
//! v9, SyncGroup v5, Heartbeat v4, OffsetCommit v8, batched OffsetFetch v8, DescribeGroups v5,
//! ListGroups v5, LeaveGroup v5, DeleteGroups v2 and OffsetDelete v0.

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::group_support::{create_topic, start_broker};
use crate::support::RawClient;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn group(text: &str) -> GroupId {
    GroupId(s(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_apis_at_their_highest_versions() {
    let b = start_broker().await;
    create_topic(&b.bootstrap, "w", 2).await;
    let addr: std::net::SocketAddr = b.bootstrap.parse().unwrap();
    let mut raw = RawClient::connect(addr).await;

    // FindCoordinator v4: every group key and every transactional id answered by this broker.
    let find = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![s("g"), s("h")]);
    let found: FindCoordinatorResponse = raw.request(ApiKey::FindCoordinator, 4, &find).await;
    assert_eq!(found.coordinators.len(), 2);
    for c in &found.coordinators {
        assert_eq!((c.error_code, c.port), (0, i32::from(addr.port())));
    }
    let txn: FindCoordinatorResponse = raw
        .request(ApiKey::FindCoordinator, 4, &find.clone().with_key_type(1))
        .await;
    assert_eq!(txn.coordinators.len(), 2);
    for c in &txn.coordinators {
        assert_eq!((c.error_code, c.port), (0, i32::from(addr.port())));
    }

    // JoinGroup v9: MEMBER_ID_REQUIRED, then the join with the given id.
    let join = JoinGroupRequest::default()
        .with_group_id(group("g"))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(&[
                    0, 0, 0, 0, 0, 1, 0, 1, b'w', 0, 0, 0, 0,
                ])),
        ]);
    let first: JoinGroupResponse = raw.request(ApiKey::JoinGroup, 9, &join).await;
    assert_eq!(first.error_code, 79);
    let member = first.member_id.clone();
    assert!(!member.is_empty());
    let joined: JoinGroupResponse = raw
        .request(
            ApiKey::JoinGroup,
            9,
            &join.clone().with_member_id(member.clone()),
        )
        .await;
    assert_eq!(joined.error_code, 0);
    assert_eq!(
        (joined.generation_id, joined.leader.clone()),
        (1, member.clone())
    );
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(joined.members.len(), 1);

    let sync = SyncGroupRequest::default()
        .with_group_id(group("g"))
        .with_generation_id(1)
        .with_member_id(member.clone())
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(member.clone())
                .with_assignment(Bytes::from_static(b"assigned")),
        ]);
    let synced: SyncGroupResponse = raw.request(ApiKey::SyncGroup, 5, &sync).await;
    assert_eq!(
        (synced.error_code, synced.assignment.as_ref()),
        (0, &b"assigned"[..])
    );
    let beat: HeartbeatResponse = raw
        .request(
            ApiKey::Heartbeat,
            4,
            &HeartbeatRequest::default()
                .with_group_id(group("g"))
                .with_generation_id(1)
                .with_member_id(member.clone()),
        )
        .await;
    assert_eq!(beat.error_code, 0);

    // OffsetCommit v8 and a batched OffsetFetch v8.
    let commit = OffsetCommitRequest::default()
        .with_group_id(group("g"))
        .with_generation_id_or_member_epoch(1)
        .with_member_id(member.clone())
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("w")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(1)
                        .with_committed_offset(5)
                        .with_committed_metadata(Some(s("m"))),
                ]),
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("missing")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()]),
        ]);
    let committed: OffsetCommitResponse = raw.request(ApiKey::OffsetCommit, 8, &commit).await;
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    assert_eq!(committed.topics[1].partitions[0].error_code, 3);
    let fetch = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(group("g"))
            .with_topics(None),
        OffsetFetchRequestGroup::default()
            .with_group_id(group("nobody"))
            .with_topics(Some(vec![
                OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s("w")))
                    .with_partition_indexes(vec![0]),
            ])),
    ]);
    let fetched: OffsetFetchResponse = raw.request(ApiKey::OffsetFetch, 8, &fetch).await;
    let g = &fetched.groups[0].topics[0].partitions[0];
    assert_eq!((g.partition_index, g.committed_offset), (1, 5));
    assert_eq!(g.metadata.as_deref(), Some("m"));
    assert_eq!(
        fetched.groups[1].topics[0].partitions[0].committed_offset,
        -1
    );

    // DescribeGroups v5 and ListGroups v5 with a state filter.
    let described: DescribeGroupsResponse = raw
        .request(
            ApiKey::DescribeGroups,
            5,
            &DescribeGroupsRequest::default().with_groups(vec![group("g")]),
        )
        .await;
    let d = &described.groups[0];
    assert_eq!(
        (d.group_state.as_str(), d.protocol_data.as_str()),
        ("Stable", "range")
    );
    assert_eq!(d.members[0].member_assignment.as_ref(), b"assigned");
    assert_eq!(d.members[0].client_id.as_str(), "raw-test");
    for (filter, listed) in [("Stable", true), ("Empty", false)] {
        let list: ListGroupsResponse = raw
            .request(
                ApiKey::ListGroups,
                5,
                &ListGroupsRequest::default().with_states_filter(vec![s(filter)]),
            )
            .await;
        assert_eq!(list.groups.iter().any(|l| l.group_id == group("g")), listed);
    }

    // A group with members can lose neither itself nor the offsets of a topic it reads.
    let delete = DeleteGroupsRequest::default().with_groups_names(vec![group("g")]);
    let refused: DeleteGroupsResponse = raw.request(ApiKey::DeleteGroups, 2, &delete).await;
    assert_eq!(refused.results[0].error_code, 68);
    let offset_delete = OffsetDeleteRequest::default()
        .with_group_id(group("g"))
        .with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name(TopicName(s("w")))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(1),
                ]),
        ]);
    let subscribed: OffsetDeleteResponse =
        raw.request(ApiKey::OffsetDelete, 0, &offset_delete).await;
    assert_eq!(subscribed.topics[0].partitions[0].error_code, 86);

    let leave = LeaveGroupRequest::default()
        .with_group_id(group("g"))
        .with_members(vec![
            MemberIdentity::default().with_member_id(member.clone()),
        ]);
    let left: LeaveGroupResponse = raw.request(ApiKey::LeaveGroup, 5, &leave).await;
    assert_eq!((left.error_code, left.members[0].error_code), (0, 0));
    let deleted: DeleteGroupsResponse = raw.request(ApiKey::DeleteGroups, 2, &delete).await;
    assert_eq!(deleted.results[0].error_code, 0);
    let gone: OffsetFetchResponse = raw.request(ApiKey::OffsetFetch, 8, &fetch).await;
    assert!(gone.groups[0].topics.is_empty());
    let missing: OffsetDeleteResponse = raw.request(ApiKey::OffsetDelete, 0, &offset_delete).await;
    assert_eq!(missing.error_code, 69);
}
