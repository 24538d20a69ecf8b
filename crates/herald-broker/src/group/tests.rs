//! Coordinator state-machine tests on an injected clock: joins, syncs, timeouts, static
//! membership, commits in each state and offset expiry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::*;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

#[derive(Default)]
struct Topics(parking_lot::Mutex<BTreeMap<String, (i32, i64)>>);

impl TopicCatalog for Topics {
    fn partition_count(&self, topic: &str) -> Option<i32> {
        self.0.lock().get(topic).map(|t| t.0)
    }
    fn retention_ms(&self, topic: &str) -> Option<i64> {
        self.0.lock().get(topic).map(|t| t.1)
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    topics: Arc<Topics>,
    c: Coordinator,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let topics = Arc::new(Topics::default());
    topics.0.lock().insert("t".into(), (6, 7 * DAY_MS));
    let config = GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    };
    let c = Coordinator::open(dir.path(), config, clock.clone(), topics.clone()).unwrap();
    Fixture {
        _dir: dir,
        clock,
        topics,
        c,
    }
}

fn join_req(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: instance.map(String::from),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| Protocol {
                name: p.to_string(),
                metadata: Bytes::from(format!("meta-{p}")),
            })
            .collect(),
        require_known_member_id: true,
        skip_assignment_supported: false,
    }
}

/// The MEMBER_ID_REQUIRED round trip: returns the id the coordinator handed out.
async fn member_id(c: &Coordinator, instance: Option<&str>) -> String {
    match c.join(join_req("", instance, &["range"])).await {
        Err(GroupError::MemberIdRequired(id)) => id,
        other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
    }
}

fn sync_req(member: &str, generation: i32, assignments: Vec<(String, Bytes)>) -> SyncRequest {
    SyncRequest {
        group_id: "g".into(),
        generation_id: generation,
        member_id: member.into(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments,
    }
}

#[tokio::test]
async fn single_member_joins_syncs_and_heartbeats() {
    let f = fixture();
    let id = member_id(&f.c, None).await;
    let joined = f.c.join(join_req(&id, None, &["range"])).await.unwrap();
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader_id, id);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(joined.members.len(), 1);
    assert_eq!(f.c.heartbeat("g", 1, &id, None), Ok(()));
    let synced =
        f.c.sync(sync_req(
            &id,
            1,
            vec![(id.clone(), Bytes::from_static(b"a"))],
        ))
        .await
        .unwrap();
    assert_eq!(synced.assignment, Bytes::from_static(b"a"));
    assert_eq!(f.c.describe_group("g").state, GroupState::Stable);
    assert_eq!(
        f.c.heartbeat("g", 0, &id, None),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        f.c.heartbeat("g", 1, "nobody", None),
        Err(GroupError::UnknownMemberId)
    );
}

#[tokio::test]
async fn second_member_triggers_rebalance_and_waits_for_the_leader() {
    let f = fixture();
    let a = member_id(&f.c, None).await;
    f.c.join(join_req(&a, None, &["range"])).await.unwrap();
    f.c.sync(sync_req(
        &a,
        1,
        vec![(a.clone(), Bytes::from_static(b"all"))],
    ))
    .await
    .unwrap();

    let b = member_id(&f.c, None).await;
    let c2 = f.c.clone();
    let b2 = b.clone();
    let b_join = tokio::spawn(async move { c2.join(join_req(&b2, None, &["range"])).await });
    // The leader learns of the rebalance from its heartbeat, then rejoins.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while f.c.heartbeat("g", 1, &a, None) != Err(GroupError::RebalanceInProgress) {
        assert!(std::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    let a_joined = f.c.join(join_req(&a, None, &["range"])).await.unwrap();
    let b_joined = b_join.await.unwrap().unwrap();
    assert_eq!(a_joined.generation_id, 2);
    assert_eq!(b_joined.generation_id, 2);
    assert_eq!(a_joined.leader_id, a, "the old leader keeps leading");
    assert_eq!(a_joined.members.len(), 2);
    assert!(b_joined.members.is_empty(), "followers get no member list");

    // The follower's SyncGroup waits for the leader's.
    let c3 = f.c.clone();
    let b3 = b.clone();
    let b_sync = tokio::spawn(async move { c3.sync(sync_req(&b3, 2, vec![])).await });
    tokio::task::yield_now().await;
    assert!(!b_sync.is_finished());
    f.c.sync(sync_req(
        &a,
        2,
        vec![
            (a.clone(), Bytes::from_static(b"p0")),
            (b.clone(), Bytes::from_static(b"p1")),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(
        b_sync.await.unwrap().unwrap().assignment,
        Bytes::from_static(b"p1")
    );
}

#[tokio::test]
async fn protocol_is_chosen_by_votes_and_inconsistent_protocols_refused() {
    let f = fixture();
    let a = member_id(&f.c, None).await;
    let mut req = join_req(&a, None, &["cooperative-sticky", "range"]);
    req.require_known_member_id = false;
    f.c.join(req).await.unwrap();
    let mut other = join_req("", None, &["roundrobin"]);
    other.require_known_member_id = false;
    assert_eq!(
        f.c.join(other).await,
        Err(GroupError::InconsistentGroupProtocol)
    );
    let mut wrong_type = join_req("", None, &["range"]);
    wrong_type.protocol_type = "connect".into();
    assert_eq!(
        f.c.join(wrong_type).await,
        Err(GroupError::InconsistentGroupProtocol)
    );
}

#[tokio::test]
async fn expired_session_removes_member_and_rebalances() {
    let f = fixture();
    let a = member_id(&f.c, None).await;
    f.c.join(join_req(&a, None, &["range"])).await.unwrap();
    f.c.sync(sync_req(&a, 1, vec![])).await.unwrap();
    f.clock.advance_ms(9_999);
    f.c.tick();
    assert_eq!(f.c.describe_group("g").members.len(), 1);
    f.clock.advance_ms(1);
    f.c.tick();
    let d = f.c.describe_group("g");
    assert_eq!(d.state, GroupState::Empty);
    assert!(d.members.is_empty());
    assert_eq!(
        f.c.heartbeat("g", 1, &a, None),
        Err(GroupError::UnknownMemberId)
    );
}

#[tokio::test]
async fn member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let f = fixture();
    let a = member_id(&f.c, None).await;
    f.c.join(join_req(&a, None, &["range"])).await.unwrap();
    f.c.sync(sync_req(&a, 1, vec![])).await.unwrap();
    let b = member_id(&f.c, None).await;
    let c2 = f.c.clone();
    let b_join = tokio::spawn(async move { c2.join(join_req(&b, None, &["range"])).await });
    tokio::task::yield_now().await;
    // `a` keeps heartbeating but never rejoins.
    for _ in 0..6 {
        f.clock.advance_ms(5_000);
        let _ = f.c.heartbeat("g", 1, &a, None);
        f.c.tick();
    }
    let joined = b_join.await.unwrap().unwrap();
    assert_eq!(joined.generation_id, 2);
    assert_eq!(joined.members.len(), 1);
    assert_eq!(
        f.c.heartbeat("g", 1, &a, None),
        Err(GroupError::UnknownMemberId)
    );
}

#[tokio::test]
async fn leave_triggers_an_immediate_rebalance() {
    let f = fixture();
    let a = member_id(&f.c, None).await;
    f.c.join(join_req(&a, None, &["range"])).await.unwrap();
    f.c.sync(sync_req(&a, 1, vec![])).await.unwrap();
    let results =
        f.c.leave(
            "g",
            &[LeaveMember {
                member_id: a.clone(),
                group_instance_id: None,
            }],
        )
        .unwrap();
    assert_eq!(results, vec![Ok(())]);
    let d = f.c.describe_group("g");
    assert_eq!(d.state, GroupState::Empty);
    assert_eq!(d.generation_id, 2);
    // An emptied group is still a consumer group, as Kafka lists it.
    assert_eq!(d.protocol_type, "consumer");
    assert_eq!(f.c.list_groups()[0].protocol_type, "consumer");
}

#[tokio::test]
async fn static_member_rejoin_keeps_assignment_without_rebalance_and_fences_the_old_id() {
    let f = fixture();
    let mut req = join_req("", Some("i-1"), &["range"]);
    let a_old = f.c.join(req.clone()).await.unwrap();
    assert_eq!(a_old.generation_id, 1);
    f.c.sync(sync_req(
        &a_old.member_id,
        1,
        vec![(a_old.member_id.clone(), Bytes::from_static(b"mine"))],
    ))
    .await
    .unwrap();

    req.member_id = String::new();
    // A restarted client's metadata differs (no owned partitions yet); that alone is no reason
    // to rebalance.
    req.protocols[0].metadata = Bytes::from_static(b"restarted");
    let a_new = f.c.join(req).await.unwrap();
    assert_eq!(a_new.generation_id, 1, "no rebalance");
    assert_ne!(a_new.member_id, a_old.member_id);
    assert_ne!(
        a_new.leader_id, a_new.member_id,
        "acts as follower to fetch its assignment"
    );
    let mut sync = sync_req(&a_new.member_id, 1, vec![]);
    sync.group_instance_id = Some("i-1".into());
    assert_eq!(
        f.c.sync(sync).await.unwrap().assignment,
        Bytes::from_static(b"mine")
    );
    assert_eq!(f.c.describe_group("g").state, GroupState::Stable);
    assert_eq!(
        f.c.heartbeat("g", 1, &a_old.member_id, Some("i-1")),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(f.c.heartbeat("g", 1, &a_new.member_id, Some("i-1")), Ok(()));
}

#[tokio::test]
async fn commits_are_checked_against_membership_and_state() {
    let f = fixture();
    let part = |offset| CommitPartition {
        topic: "t".into(),
        partition: 0,
        offset,
        leader_epoch: -1,
        metadata: Some("m".into()),
    };
    // An outsider may commit to an unknown (or Empty) group.
    let outsider = CommitRequest {
        group_id: "g".into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![
            part(5),
            CommitPartition {
                topic: "missing".into(),
                ..part(1)
            },
        ],
    };
    let r = f.c.commit(outsider.clone()).await.unwrap();
    assert_eq!(r, vec![Ok(()), Err(GroupError::UnknownTopicOrPartition)]);
    let fetched =
        f.c.fetch_offsets("g", Some(&[("t".into(), 0), ("t".into(), 1)]));
    assert_eq!(fetched[0].committed.as_ref().unwrap().offset, 5);
    assert_eq!(fetched[0].committed.as_ref().unwrap().metadata, "m");
    assert_eq!(fetched[1].committed, None);

    let a = member_id(&f.c, None).await;
    f.c.join(join_req(&a, None, &["range"])).await.unwrap();
    let member_commit = CommitRequest {
        group_id: "g".into(),
        generation_id: 1,
        member_id: a.clone(),
        group_instance_id: None,
        partitions: vec![part(9)],
    };
    // CompletingRebalance: no commits until assignments are known.
    assert_eq!(
        f.c.commit(member_commit.clone()).await,
        Err(GroupError::RebalanceInProgress)
    );
    f.c.sync(sync_req(&a, 1, vec![])).await.unwrap();
    assert_eq!(
        f.c.commit(member_commit.clone()).await.unwrap(),
        vec![Ok(())]
    );
    assert_eq!(
        f.c.commit(CommitRequest {
            generation_id: 7,
            ..member_commit.clone()
        })
        .await,
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(f.c.commit(outsider).await, Err(GroupError::UnknownMemberId));
    assert_eq!(
        f.c.delete_groups(&["g".into()]).await,
        vec![Err(GroupError::NonEmptyGroup)]
    );
    assert_eq!(
        f.c.delete_groups(&["nope".into()]).await,
        vec![Err(GroupError::GroupIdNotFound)]
    );
}

#[tokio::test]
async fn offsets_and_groups_survive_reopen_as_empty_groups() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let topics = Arc::new(Topics::default());
    topics.0.lock().insert("t".into(), (1, DAY_MS));
    let open = || {
        Coordinator::open(
            dir.path(),
            GroupConfig::default(),
            clock.clone(),
            topics.clone(),
        )
        .unwrap()
    };
    let c = open();
    let req = CommitRequest {
        group_id: "g".into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![CommitPartition {
            topic: "t".into(),
            partition: 0,
            offset: 42,
            leader_epoch: 3,
            metadata: None,
        }],
    };
    c.commit(req).await.unwrap();
    drop(c);
    let c = open();
    let listed = c.list_groups();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, GroupState::Empty);
    let fetched = c.fetch_offsets("g", None);
    assert_eq!(fetched[0].committed.as_ref().unwrap().offset, 42);
    assert_eq!(fetched[0].committed.as_ref().unwrap().leader_epoch, 3);
    assert_eq!(c.delete_groups(&["g".into()]).await, vec![Ok(())]);
    drop(c);
    let c = open();
    assert!(c.list_groups().is_empty());
    assert!(c.fetch_offsets("g", None).is_empty());
}

#[tokio::test]
async fn empty_group_offsets_outlive_the_longest_topic_retention() {
    let f = fixture();
    f.topics.0.lock().insert("long".into(), (1, 30 * DAY_MS));
    let commit = |topic: &str| CommitRequest {
        group_id: "g".into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![CommitPartition {
            topic: topic.into(),
            partition: 0,
            offset: 1,
            leader_epoch: -1,
            metadata: None,
        }],
    };
    f.c.commit(commit("t")).await.unwrap();
    f.c.commit(commit("long")).await.unwrap();
    // offsets.retention (14 d default) and topic "t" (7 d) have passed, "long" (30 d) has not.
    f.clock.advance_ms(29 * DAY_MS);
    assert_eq!(f.c.expire_offsets().await.unwrap(), 0);
    assert_eq!(f.c.fetch_offsets("g", None).len(), 2);
    f.clock.advance_ms(DAY_MS);
    assert_eq!(f.c.expire_offsets().await.unwrap(), 2);
    assert!(f.c.fetch_offsets("g", None).is_empty());
    assert!(f.c.list_groups().is_empty());
}

#[tokio::test]
async fn offsets_retention_config_only_lengthens() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let topics = Arc::new(Topics::default());
    topics.0.lock().insert("t".into(), (1, 14 * DAY_MS));
    let config = GroupConfig {
        offsets_retention_minutes: 24 * 60,
        ..GroupConfig::default()
    };
    let c = Coordinator::open(dir.path(), config, clock.clone(), topics.clone()).unwrap();
    c.commit(CommitRequest {
        group_id: "g".into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![CommitPartition {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            leader_epoch: -1,
            metadata: None,
        }],
    })
    .await
    .unwrap();
    // A one-day offsets retention must not cut below the topic's 14 days.
    clock.advance_ms(14 * DAY_MS - 1);
    assert_eq!(c.expire_offsets().await.unwrap(), 0);
    clock.advance_ms(1);
    assert_eq!(c.expire_offsets().await.unwrap(), 1);
}

#[tokio::test]
async fn offsets_of_a_group_with_members_never_expire() {
    let f = fixture();
    let a = member_id(&f.c, None).await;
    let mut req = join_req(&a, None, &["range"]);
    req.session_timeout_ms = 1_800_000;
    f.c.join(req).await.unwrap();
    f.c.sync(sync_req(&a, 1, vec![])).await.unwrap();
    f.c.commit(CommitRequest {
        group_id: "g".into(),
        generation_id: 1,
        member_id: a.clone(),
        group_instance_id: None,
        partitions: vec![CommitPartition {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            leader_epoch: -1,
            metadata: None,
        }],
    })
    .await
    .unwrap();
    f.clock.advance_ms(100 * DAY_MS);
    assert_eq!(f.c.expire_offsets().await.unwrap(), 0);
}

#[tokio::test]
async fn offset_delete_refuses_subscribed_topics_while_the_group_has_members() {
    let f = fixture();
    f.topics.0.lock().insert("old".into(), (1, DAY_MS));
    // ConsumerProtocolSubscription v0 for topic "t".
    let subscription = Bytes::from_static(&[0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0]);
    let commit = |topic: &str| CommitRequest {
        group_id: "g".into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![CommitPartition {
            topic: topic.into(),
            partition: 0,
            offset: 3,
            leader_epoch: -1,
            metadata: None,
        }],
    };
    f.c.commit(commit("t")).await.unwrap();
    f.c.commit(commit("old")).await.unwrap();
    let mut req = join_req("", None, &["range"]);
    req.require_known_member_id = false;
    req.protocols[0].metadata = subscription;
    let joined = f.c.join(req).await.unwrap();
    f.c.sync(sync_req(&joined.member_id, 1, vec![]))
        .await
        .unwrap();

    let parts = [("t".to_string(), 0), ("old".to_string(), 0)];
    let results = f.c.delete_offsets("g", &parts).await.unwrap();
    assert_eq!(
        results,
        vec![Err(GroupError::GroupSubscribedToTopic), Ok(())]
    );
    let left = f.c.fetch_offsets("g", Some(&parts));
    assert!(left[0].committed.is_some());
    assert_eq!(left[1].committed, None);
    assert_eq!(
        f.c.delete_offsets("nope", &parts).await,
        Err(GroupError::GroupIdNotFound)
    );
    let listed = f.c.list_groups();
    assert_eq!(listed[0].state, GroupState::Stable);
    assert_eq!(listed[0].protocol_type, "consumer");
    let described = f.c.describe_group("g");
    assert_eq!(described.members[0].member_id, joined.member_id);
    assert_eq!(described.protocol_name, "range");
    assert_eq!(f.c.describe_group("nope").state, GroupState::Dead);
}

#[tokio::test]
async fn limits_refuse_oversized_groups_ids_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        initial_rebalance_delay_ms: 0,
        members_per_group_max: 1,
        protocol_metadata_bytes_max: 16,
        offset_metadata_bytes_max: 2,
        ..GroupConfig::default()
    };
    let topics = Arc::new(Topics::default());
    topics.0.lock().insert("t".into(), (1, DAY_MS));
    let c = Coordinator::open(dir.path(), config, Arc::new(ManualClock::new(0)), topics).unwrap();
    let mut req = join_req("", None, &["range"]);
    req.group_id = "x".repeat(256);
    assert_eq!(c.join(req).await, Err(GroupError::InvalidGroupId));
    let mut req = join_req("", None, &["range"]);
    req.protocols[0].metadata = Bytes::from(vec![0; 17]);
    assert!(matches!(
        c.join(req).await,
        Err(GroupError::InvalidRequest(_))
    ));
    let mut req = join_req("", None, &["range"]);
    req.session_timeout_ms = 10;
    assert_eq!(
        c.join(req).await,
        Err(GroupError::InvalidSessionTimeout(10))
    );
    let first = member_id(&c, None).await;
    assert_eq!(
        c.join(join_req("", None, &["range"])).await,
        Err(GroupError::GroupMaxSizeReached)
    );
    c.join(join_req(&first, None, &["range"])).await.unwrap();
    let results = c
        .commit(CommitRequest {
            group_id: "other".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            partitions: vec![CommitPartition {
                topic: "t".into(),
                partition: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: Some("too long".into()),
            }],
        })
        .await
        .unwrap();
    assert_eq!(results, vec![Err(GroupError::OffsetMetadataTooLarge)]);
}

#[tokio::test]
async fn a_deleted_group_is_gone_and_can_be_used_again() {
    let f = fixture();
    let commit = CommitRequest {
        group_id: "g".into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![CommitPartition {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            leader_epoch: -1,
            metadata: None,
        }],
    };
    f.c.commit(commit.clone()).await.unwrap();
    assert_eq!(f.c.delete_groups(&["g".into()]).await, vec![Ok(())]);
    assert!(f.c.list_groups().is_empty());
    assert_eq!(f.c.describe_group("g").state, GroupState::Dead);
    assert!(f.c.fetch_offsets("g", None).is_empty());
    // The id is free again: a new commit starts a new group.
    f.c.commit(commit).await.unwrap();
    assert_eq!(
        f.c.fetch_offsets("g", None)[0]
            .committed
            .as_ref()
            .unwrap()
            .offset,
        7
    );
    assert_eq!(f.c.list_groups()[0].state, GroupState::Empty);
}

#[tokio::test]
async fn a_static_member_that_stops_heartbeating_expires_at_its_session_timeout() {
    let f = fixture();
    let joined =
        f.c.join(join_req("", Some("i-1"), &["range"]))
            .await
            .unwrap();
    let mut sync = sync_req(&joined.member_id, 1, vec![]);
    sync.group_instance_id = Some("i-1".into());
    f.c.sync(sync).await.unwrap();
    assert_eq!(
        f.c.heartbeat("g", 1, &joined.member_id, Some("i-1")),
        Ok(())
    );
    // Static members do not leave on close; only their session ends them.
    f.clock.advance_ms(9_999);
    f.c.tick();
    assert_eq!(f.c.describe_group("g").state, GroupState::Stable);
    f.clock.advance_ms(1);
    f.c.tick();
    assert_eq!(f.c.describe_group("g").state, GroupState::Empty);
    assert_eq!(f.c.delete_groups(&["g".to_string()]).await, vec![Ok(())]);
}

#[tokio::test]
async fn a_commit_does_not_extend_the_session() {
    let f = fixture();
    let joined =
        f.c.join(join_req("", Some("i-1"), &["range"]))
            .await
            .unwrap();
    let mut sync = sync_req(&joined.member_id, 1, vec![]);
    sync.group_instance_id = Some("i-1".into());
    f.c.sync(sync).await.unwrap();
    // The member's last word before it closes is a commit, not a heartbeat.
    f.clock.advance_ms(9_000);
    let results =
        f.c.commit(CommitRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: joined.member_id.clone(),
            group_instance_id: Some("i-1".into()),
            partitions: vec![CommitPartition {
                topic: "t".into(),
                partition: 0,
                offset: 3,
                leader_epoch: -1,
                metadata: None,
            }],
        })
        .await
        .unwrap();
    assert_eq!(results, vec![Ok(())]);
    f.clock.advance_ms(1_000);
    f.c.tick();
    assert_eq!(f.c.describe_group("g").state, GroupState::Empty);
}
