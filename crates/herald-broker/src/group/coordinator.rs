//! The coordinator's API: one call per group request, each validating against the group's state
//! and either answering at once or waiting (JoinGroup, SyncGroup) for the rest of the group.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::Clock;
use super::error::{GroupError, OpenError};
use super::offsets::{
    CommittedOffset, OFFSET_METADATA_BYTES_MAX, OffsetRecord, OffsetStore, StoreLimits, Written,
};
use super::state::{Group, GroupState, Member};
use super::subscription::subscribed_topics;

/// What the coordinator needs to know about topics: partitions (to validate commits) and
/// retention (so a group's offsets outlive the messages they point into).
pub trait TopicCatalog: Send + Sync {
    /// The topic's partition count, or `None` if it does not exist.
    fn partition_count(&self, topic: &str) -> Option<i32>;
    /// The topic's `retention.ms` (-1 for unlimited), or `None` if it does not exist.
    fn retention_ms(&self, topic: &str) -> Option<i64>;
}

/// Limits and timeouts of the group coordinator (the `[groups]` table of the broker config).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GroupConfig {
    /// Smallest session timeout a member may ask for (Kafka `group.min.session.timeout.ms`).
    pub session_timeout_ms_min: i32,
    /// Largest session timeout a member may ask for (Kafka `group.max.session.timeout.ms`).
    pub session_timeout_ms_max: i32,
    /// How long a new group waits for more members before its first generation
    /// (Kafka `group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay_ms: i64,
    /// Members (plus members with pending ids) per group (Kafka `group.max.size`).
    pub members_per_group_max: usize,
    /// Groups the coordinator holds.
    pub groups_max: usize,
    /// Longest group id.
    pub group_id_bytes_max: usize,
    /// Largest protocol metadata per member and protocol.
    pub protocol_metadata_bytes_max: usize,
    /// Largest assignment per member.
    pub assignment_bytes_max: usize,
    /// Longest commit metadata string (Kafka `offset.metadata.max.bytes`); at most 512 KiB
    /// whatever is configured.
    pub offset_metadata_bytes_max: usize,
    /// Least time an Empty group's offsets are kept (Kafka `offsets.retention.minutes`); a group
    /// covering topics with longer retention keeps them as long as those topics keep messages.
    pub offsets_retention_minutes: i64,
    /// How often expired offsets are looked for.
    pub offsets_expiry_check_ms: i64,
    /// Period of the timer that applies session and rebalance timeouts.
    pub tick_ms: u64,
    /// Commits that may wait for the offsets writer at once.
    pub write_queue_jobs_max: usize,
    /// Size past which the offsets file is compacted.
    pub offsets_file_bytes_max: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            members_per_group_max: 1_000,
            groups_max: 100_000,
            group_id_bytes_max: 255,
            protocol_metadata_bytes_max: 1 << 20,
            assignment_bytes_max: 1 << 20,
            offset_metadata_bytes_max: 4_096,
            offsets_retention_minutes: 14 * 24 * 60,
            offsets_expiry_check_ms: 10 * 60 * 1000,
            tick_ms: 100,
            write_queue_jobs_max: 4_096,
            offsets_file_bytes_max: 64 << 20,
        }
    }
}

/// A protocol a member supports (an assignor name for consumers) and its opaque metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// A JoinGroup request.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED with its id.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a static leader rejoining can be told to skip assignment.
    pub skip_assignment_supported: bool,
}

/// A member as the leader sees it in the JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// A successful JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// Every member with its metadata for the chosen protocol, for the leader only.
    pub members: Vec<JoinMember>,
}

/// A SyncGroup request; only the leader sends assignments.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

/// A successful SyncGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// A member named in LeaveGroup.
#[derive(Debug, Clone)]
pub struct LeaveMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// An OffsetCommit request.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub group_id: String,
    /// -1 with an empty member id: a commit from outside the group (only while it is Empty).
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub partitions: Vec<CommitPartition>,
}

/// One partition's offset in an OffsetCommit request.
#[derive(Debug, Clone)]
pub struct CommitPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// One partition's committed offset, or `None` if the group has none for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<CommittedOffset>,
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

struct Shared {
    config: GroupConfig,
    clock: Arc<dyn Clock>,
    topics: Arc<dyn TopicCatalog>,
    groups: Mutex<BTreeMap<String, Group>>,
    store: OffsetStore,
}

/// The group coordinator. Cheap to clone; all clones share one state.
///
/// ```no_run
/// # async fn demo(dir: &std::path::Path, topics: std::sync::Arc<dyn herald_broker::group::TopicCatalog>) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use herald_broker::group::{Coordinator, GroupConfig, SystemClock};
/// let coordinator = Coordinator::open(dir, GroupConfig::default(), Arc::new(SystemClock), topics)?;
/// let _timer = coordinator.spawn_timer();
/// let offsets = coordinator.fetch_offsets("billing", None);
/// # let _ = offsets; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Coordinator {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").finish_non_exhaustive()
    }
}

enum Answer<T> {
    Now(Result<T, GroupError>),
    Wait(oneshot::Receiver<Result<T, GroupError>>),
}

impl<T> Answer<T> {
    async fn get(self) -> Result<T, GroupError> {
        match self {
            Answer::Now(result) => result,
            // A dropped sender means the member was removed while it waited.
            Answer::Wait(rx) => rx.await.unwrap_or(Err(GroupError::UnknownMemberId)),
        }
    }
}

/// The answer to a JoinGroup or SyncGroup whose effect on the group has been applied: now, or
/// once the rebalance it joined completes.
#[must_use = "the member learns its fate only when the answer is awaited"]
pub struct Pending<T>(Answer<T>);

impl<T> Pending<T> {
    /// Waits for the answer.
    pub async fn get(self) -> Result<T, GroupError> {
        self.0.get().await
    }
}

/// A commit whose offsets are queued for the store (see [`Coordinator::commit_start`]).
#[must_use = "a commit's outcome is known only once it is awaited"]
pub struct PendingCommit {
    results: Vec<Result<(), GroupError>>,
    written: Option<Written>,
}

impl PendingCommit {
    /// Waits until the offsets are durable; one result per partition, in request order.
    pub async fn wait(self) -> Vec<Result<(), GroupError>> {
        let written = match self.written {
            Some(written) => written.wait().await,
            None => Ok(()),
        };
        self.results
            .into_iter()
            .map(|r| r.and_then(|()| written.clone()))
            .collect()
    }
}

impl Coordinator {
    /// Opens the coordinator on `dir`, recovering committed offsets; every group that has
    /// offsets starts Empty.
    pub fn open(
        dir: &Path,
        config: GroupConfig,
        clock: Arc<dyn Clock>,
        topics: Arc<dyn TopicCatalog>,
    ) -> Result<Coordinator, OpenError> {
        let store = OffsetStore::open(
            dir,
            &StoreLimits {
                write_queue_jobs_max: config.write_queue_jobs_max,
                offsets_file_bytes_max: config.offsets_file_bytes_max,
            },
        )?;
        let now = clock.now_ms();
        let groups = store.with_map(|map| {
            map.keys()
                .map(|g| (g.clone(), Group::new(now)))
                .collect::<BTreeMap<_, _>>()
        });
        Ok(Coordinator {
            shared: Arc::new(Shared {
                config,
                clock,
                topics,
                groups: Mutex::new(groups),
                store,
            }),
        })
    }

    /// Starts the task that applies timeouts every `tick_ms` and expires offsets every
    /// `offsets_expiry_check_ms`. It ends when the last clone of the coordinator is dropped.
    pub fn spawn_timer(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let period = Duration::from_millis(self.shared.config.tick_ms.max(1));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next_expiry_ms = i64::MIN;
            loop {
                interval.tick().await;
                let Some(shared) = weak.upgrade() else { break };
                let coordinator = Coordinator { shared };
                coordinator.tick();
                let now = coordinator.shared.clock.now_ms();
                if now >= next_expiry_ms {
                    next_expiry_ms = now + coordinator.shared.config.offsets_expiry_check_ms;
                    if let Err(error) = coordinator.expire_offsets().await {
                        tracing::warn!(%error, "expiring committed offsets failed");
                    }
                }
            }
        })
    }

    /// Applies session, join and sync timeouts as of the clock's current time.
    pub fn tick(&self) {
        let now = self.shared.clock.now_ms();
        let delay = self.shared.config.initial_rebalance_delay_ms;
        let mut groups = self.shared.groups.lock();
        for group in groups.values_mut() {
            group.tick(now, delay);
        }
    }

    fn check_group_id(&self, group_id: &str) -> Result<(), GroupError> {
        if group_id.is_empty() || group_id.len() > self.shared.config.group_id_bytes_max {
            return Err(GroupError::InvalidGroupId);
        }
        Ok(())
    }

    /// JoinGroup: answers when the rebalance the join starts (or joins) completes.
    pub async fn join(&self, request: JoinRequest) -> Result<JoinResponse, GroupError> {
        self.join_start(request).get().await
    }

    /// JoinGroup's effect on the group, applied before this returns (so a connection's later
    /// requests see it); the answer comes when the rebalance completes.
    pub fn join_start(&self, request: JoinRequest) -> Pending<JoinResponse> {
        Pending(self.join_locked(request))
    }

    fn join_locked(&self, req: JoinRequest) -> Answer<JoinResponse> {
        let config = &self.shared.config;
        let now = self.shared.clock.now_ms();
        if let Err(e) = self.check_group_id(&req.group_id) {
            return Answer::Now(Err(e));
        }
        if req.session_timeout_ms < config.session_timeout_ms_min
            || req.session_timeout_ms > config.session_timeout_ms_max
        {
            return Answer::Now(Err(GroupError::InvalidSessionTimeout(
                req.session_timeout_ms,
            )));
        }
        if req
            .protocols
            .iter()
            .any(|p| p.metadata.len() > config.protocol_metadata_bytes_max)
        {
            return Answer::Now(Err(GroupError::InvalidRequest(
                "protocol metadata exceeds protocol_metadata_bytes_max",
            )));
        }
        let mut groups = self.shared.groups.lock();
        if !groups.contains_key(&req.group_id) {
            if !req.member_id.is_empty() {
                return Answer::Now(Err(GroupError::UnknownMemberId));
            }
            if groups.len() >= config.groups_max {
                return Answer::Now(Err(GroupError::GroupsMaxReached));
            }
        }
        let group = groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(now));
        if group.state == GroupState::Dead {
            return Answer::Now(Err(GroupError::CoordinatorNotAvailable));
        }
        let except = (!req.member_id.is_empty()).then_some(req.member_id.as_str());
        if !group.supports(&req.protocol_type, &req.protocols, except) {
            return Answer::Now(Err(GroupError::InconsistentGroupProtocol));
        }
        let delay = config.initial_rebalance_delay_ms;

        if req.member_id.is_empty() {
            if let Some(instance) = &req.group_instance_id {
                if let Some(old_id) = group.static_members.get(instance).cloned() {
                    return rejoin_static(group, req, old_id, now, delay);
                }
            }
            if group.members.len() + group.pending.len() >= config.members_per_group_max {
                return Answer::Now(Err(GroupError::GroupMaxSizeReached));
            }
            let member_id = new_member_id(&req.client_id);
            if req.group_instance_id.is_none() && req.require_known_member_id {
                // The client must come back with this id, so a retried join cannot leave
                // an orphan member behind.
                group
                    .pending
                    .insert(member_id.clone(), now + i64::from(req.session_timeout_ms));
                return Answer::Now(Err(GroupError::MemberIdRequired(member_id)));
            }
            return add_member(group, req, member_id, now, delay);
        }

        if group.pending.remove(&req.member_id).is_some() {
            if group.members.len() >= config.members_per_group_max {
                return Answer::Now(Err(GroupError::GroupMaxSizeReached));
            }
            let member_id = req.member_id.clone();
            return add_member(group, req, member_id, now, delay);
        }
        if let Err(e) = group.check_member(&req.member_id, req.group_instance_id.as_deref()) {
            return Answer::Now(Err(e));
        }
        let is_leader = group.leader.as_deref() == Some(req.member_id.as_str());
        let state = group.state;
        let Some(member) = group.members.get_mut(&req.member_id) else {
            return Answer::Now(Err(GroupError::UnknownMemberId));
        };
        let unchanged = member.protocols == req.protocols;
        member.last_heartbeat_ms = now;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        match state {
            GroupState::CompletingRebalance if unchanged => {
                // The member lost our response; tell it again.
                Answer::Now(Ok(group.current_join_response(&req.member_id)))
            }
            GroupState::Stable if unchanged && !is_leader => {
                Answer::Now(Ok(group.current_join_response(&req.member_id)))
            }
            GroupState::PreparingRebalance
            | GroupState::CompletingRebalance
            | GroupState::Stable => {
                member.protocols = req.protocols;
                let (tx, rx) = oneshot::channel();
                if let Some(old) = member.join_waiter.replace(tx) {
                    // A duplicate join from the same member: the newer request gets the answer.
                    let _ = old.send(Err(GroupError::RebalanceInProgress));
                }
                group.prepare_rebalance(now, delay);
                group.maybe_complete_join(now);
                Answer::Wait(rx)
            }
            GroupState::Empty | GroupState::Dead => Answer::Now(Err(GroupError::UnknownMemberId)),
        }
    }

    /// SyncGroup: the leader's call installs the assignment; followers wait for it.
    pub async fn sync(&self, req: SyncRequest) -> Result<SyncResponse, GroupError> {
        self.sync_start(req).get().await
    }

    /// SyncGroup's effect on the group, applied before this returns; the answer comes once
    /// the leader's assignment is in.
    pub fn sync_start(&self, req: SyncRequest) -> Pending<SyncResponse> {
        Pending(self.sync_locked(req))
    }

    fn sync_locked(&self, req: SyncRequest) -> Answer<SyncResponse> {
        let now = self.shared.clock.now_ms();
        let mut groups = self.shared.groups.lock();
        let Some(group) = groups.get_mut(&req.group_id) else {
            return Answer::Now(Err(GroupError::UnknownMemberId));
        };
        if let Err(e) = group.check_member(&req.member_id, req.group_instance_id.as_deref()) {
            return Answer::Now(Err(e));
        }
        if req.generation_id != group.generation {
            return Answer::Now(Err(GroupError::IllegalGeneration));
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != group.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| Some(n) != group.protocol_name.as_ref())
        {
            return Answer::Now(Err(GroupError::InconsistentGroupProtocol));
        }
        if req
            .assignments
            .iter()
            .any(|(_, a)| a.len() > self.shared.config.assignment_bytes_max)
        {
            return Answer::Now(Err(GroupError::InvalidRequest(
                "assignment exceeds assignment_bytes_max",
            )));
        }
        let is_leader = group.leader.as_deref() == Some(req.member_id.as_str());
        match group.state {
            GroupState::Empty | GroupState::Dead => Answer::Now(Err(GroupError::UnknownMemberId)),
            GroupState::PreparingRebalance => Answer::Now(Err(GroupError::RebalanceInProgress)),
            GroupState::CompletingRebalance => {
                let Some(member) = group.members.get_mut(&req.member_id) else {
                    return Answer::Now(Err(GroupError::UnknownMemberId));
                };
                member.synced = true;
                member.last_heartbeat_ms = now;
                let (tx, rx) = oneshot::channel();
                member.sync_waiter = Some(tx);
                if is_leader {
                    group.complete_sync(req.assignments, now);
                }
                Answer::Wait(rx)
            }
            GroupState::Stable => {
                let Some(member) = group.members.get_mut(&req.member_id) else {
                    return Answer::Now(Err(GroupError::UnknownMemberId));
                };
                member.last_heartbeat_ms = now;
                Answer::Now(Ok(SyncResponse {
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    assignment: member.assignment.clone(),
                }))
            }
        }
    }

    /// Heartbeat: keeps the member's session alive and tells it whether to rejoin.
    pub fn heartbeat(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        let now = self.shared.clock.now_ms();
        let mut groups = self.shared.groups.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        group.check_member(member_id, group_instance_id)?;
        if group.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if generation_id != group.generation {
            return Err(GroupError::IllegalGeneration);
        }
        let state = group.state;
        if let Some(member) = group.members.get_mut(member_id) {
            member.last_heartbeat_ms = now;
        }
        match state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup: removes the members at once and starts a rebalance for the rest.
    /// Returns one result per member, in order.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[LeaveMember],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let now = self.shared.clock.now_ms();
        let mut groups = self.shared.groups.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        let mut removed = false;
        let results = members
            .iter()
            .map(|m| {
                let target = match &m.group_instance_id {
                    Some(instance) => match group.static_members.get(instance) {
                        None => return Err(GroupError::UnknownMemberId),
                        Some(current) if !m.member_id.is_empty() && *current != m.member_id => {
                            return Err(GroupError::FencedInstanceId);
                        }
                        Some(current) => current.clone(),
                    },
                    None => m.member_id.clone(),
                };
                if group.pending.remove(&target).is_some() {
                    removed = true;
                    return Ok(());
                }
                if group.remove_member(&target) {
                    removed = true;
                    Ok(())
                } else {
                    Err(GroupError::UnknownMemberId)
                }
            })
            .collect();
        if removed {
            group.on_members_removed(now, self.shared.config.initial_rebalance_delay_ms);
        }
        Ok(results)
    }

    /// OffsetCommit: returns once the offsets are durable; one result per partition, in order.
    pub async fn commit(
        &self,
        req: CommitRequest,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        Ok(self.commit_start(req).await?.wait().await)
    }

    /// The first half of [`Coordinator::commit`]: checks the request and queues its offsets
    /// for the store, waiting only for room in the queue. Commits started in some order are
    /// written and applied in that order, whenever each one's [`PendingCommit`] is awaited: a
    /// connection that starts each commit before reading its next request keeps Kafka's rule
    /// that one connection's requests take effect in the order they were sent.
    pub async fn commit_start(&self, req: CommitRequest) -> Result<PendingCommit, GroupError> {
        let now = self.shared.clock.now_ms();
        let config = &self.shared.config;
        self.check_group_id(&req.group_id)?;
        {
            let mut groups = self.shared.groups.lock();
            let outsider = req.generation_id < 0 && req.member_id.is_empty();
            match groups.get_mut(&req.group_id) {
                None if outsider => {
                    if groups.len() >= config.groups_max {
                        return Err(GroupError::GroupsMaxReached);
                    }
                    groups.insert(req.group_id.clone(), Group::new(now));
                }
                None => return Err(GroupError::IllegalGeneration),
                Some(group) if group.state == GroupState::Dead => {
                    return Err(GroupError::CoordinatorNotAvailable);
                }
                Some(group) if outsider && group.state == GroupState::Empty => {}
                Some(group) => {
                    group.check_member(&req.member_id, req.group_instance_id.as_deref())?;
                    match group.state {
                        GroupState::Dead => return Err(GroupError::CoordinatorNotAvailable),
                        GroupState::CompletingRebalance => {
                            return Err(GroupError::RebalanceInProgress);
                        }
                        _ => {}
                    }
                    if req.generation_id != group.generation {
                        return Err(GroupError::IllegalGeneration);
                    }
                    // A commit does not extend the member's session, as in Kafka's current
                    // group coordinator: a static member that commits on close and stops
                    // heartbeating leaves one session timeout after its last heartbeat.
                }
            }
        }
        let mut results = Vec::with_capacity(req.partitions.len());
        let mut records = Vec::new();
        for p in req.partitions {
            let metadata = p.metadata.unwrap_or_default();
            let check = if metadata.len()
                > config
                    .offset_metadata_bytes_max
                    .min(OFFSET_METADATA_BYTES_MAX)
            {
                Err(GroupError::OffsetMetadataTooLarge)
            } else if self
                .shared
                .topics
                .partition_count(&p.topic)
                .is_none_or(|count| p.partition < 0 || p.partition >= count)
            {
                Err(GroupError::UnknownTopicOrPartition)
            } else {
                records.push(OffsetRecord::Commit {
                    group: req.group_id.clone(),
                    topic: p.topic,
                    partition: p.partition,
                    value: CommittedOffset {
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        metadata,
                        commit_timestamp_ms: now,
                    },
                });
                Ok(())
            };
            results.push(check);
        }
        let written = if records.is_empty() {
            None
        } else {
            Some(self.shared.store.enqueue(records).await?)
        };
        Ok(PendingCommit { results, written })
    }

    /// The offsets of a committed transaction (TxnOffsetCommit, applied at EndTxn): written
    /// like any commit, without the member checks, which a transaction's offsets skip (the
    /// transaction coordinator fenced older producers instead). Each offset is (group, topic,
    /// partition, offset, leader epoch, metadata). Returns once they are durable.
    pub async fn commit_transactional(
        &self,
        offsets: Vec<(String, String, i32, i64, i32, String)>,
    ) -> Result<(), GroupError> {
        let now = self.shared.clock.now_ms();
        let records = offsets
            .into_iter()
            .map(
                |(group, topic, partition, offset, leader_epoch, metadata)| OffsetRecord::Commit {
                    group,
                    topic,
                    partition,
                    value: CommittedOffset {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_timestamp_ms: now,
                    },
                },
            )
            .collect();
        self.shared.store.write(records).await
    }

    /// A barrier behind every commit started before this call: once it is awaited, those
    /// commits are durable and visible to [`Coordinator::fetch_offsets`]. An OffsetFetch waits
    /// for one, so that it sees the commits its connection sent before it.
    pub async fn commit_barrier(&self) -> Result<PendingCommit, GroupError> {
        Ok(PendingCommit {
            results: Vec::new(),
            written: Some(self.shared.store.enqueue(Vec::new()).await?),
        })
    }

    /// OffsetFetch: the committed offsets of `partitions`, or of every partition the group has
    /// committed if `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<FetchedOffset> {
        self.shared.store.with_map(|map| {
            let offsets = map.get(group_id);
            match partitions {
                Some(wanted) => wanted
                    .iter()
                    .map(|(topic, partition)| FetchedOffset {
                        topic: topic.clone(),
                        partition: *partition,
                        committed: offsets
                            .and_then(|o| o.get(&(topic.clone(), *partition)))
                            .cloned(),
                    })
                    .collect(),
                None => offsets
                    .into_iter()
                    .flatten()
                    .map(|((topic, partition), value)| FetchedOffset {
                        topic: topic.clone(),
                        partition: *partition,
                        committed: Some(value.clone()),
                    })
                    .collect(),
            }
        })
    }

    /// ListGroups: every group the coordinator holds.
    pub fn list_groups(&self) -> Vec<GroupListing> {
        let groups = self.shared.groups.lock();
        groups
            .iter()
            .filter(|(_, g)| g.state != GroupState::Dead)
            .map(|(id, g)| GroupListing {
                group_id: id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect()
    }

    /// DescribeGroups: one group's state and members; a missing group is described as Dead.
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        let groups = self.shared.groups.lock();
        let Some(group) = groups.get(group_id) else {
            return GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                generation_id: -1,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        let protocol = group.protocol_name.clone().unwrap_or_default();
        GroupDescription {
            group_id: group_id.to_string(),
            state: group.state,
            generation_id: group.generation,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.clone(),
            members: group
                .members
                .values()
                .map(|m: &Member| MemberDescription {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// DeleteGroups: removes Empty groups and their offsets, durably; one result per group.
    pub async fn delete_groups(&self, group_ids: &[String]) -> Vec<Result<(), GroupError>> {
        let now = self.shared.clock.now_ms();
        let mut results = Vec::with_capacity(group_ids.len());
        let mut records = Vec::new();
        let mut dead = Vec::new();
        {
            let mut groups = self.shared.groups.lock();
            for id in group_ids {
                let result = match groups.get_mut(id) {
                    None => Err(GroupError::GroupIdNotFound),
                    Some(g) if g.state == GroupState::Dead => Err(GroupError::GroupIdNotFound),
                    Some(g) if g.state != GroupState::Empty => Err(GroupError::NonEmptyGroup),
                    Some(g) => {
                        g.set_state(GroupState::Dead, now);
                        records.push(OffsetRecord::DeleteGroup { group: id.clone() });
                        dead.push(id.clone());
                        Ok(())
                    }
                };
                results.push(result);
            }
        }
        let written = self.shared.store.write(records).await;
        self.remove_dead(&dead);
        results
            .into_iter()
            .map(|r| r.and_then(|()| written.clone()))
            .collect()
    }

    /// OffsetDelete: removes committed offsets of topics the group no longer reads.
    /// One result per partition, in order.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let mut results = Vec::with_capacity(partitions.len());
        let mut records = Vec::new();
        {
            let groups = self.shared.groups.lock();
            let group = groups.get(group_id).ok_or(GroupError::GroupIdNotFound)?;
            let subscribed: Option<Vec<String>> = if group.state == GroupState::Empty {
                Some(Vec::new())
            } else if group.protocol_type.as_deref() == Some("consumer") {
                let protocol = group.protocol_name.clone().unwrap_or_default();
                let mut topics = Vec::new();
                for member in group.members.values() {
                    topics.extend(
                        subscribed_topics(&member.metadata_for(&protocol)).unwrap_or_default(),
                    );
                }
                Some(topics)
            } else {
                None
            };
            let Some(subscribed) = subscribed else {
                return Err(GroupError::NonEmptyGroup);
            };
            for (topic, partition) in partitions {
                if subscribed.contains(topic) {
                    results.push(Err(GroupError::GroupSubscribedToTopic));
                } else {
                    records.push(OffsetRecord::DeletePartition {
                        group: group_id.to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                    });
                    results.push(Ok(()));
                }
            }
        }
        let written = self.shared.store.write(records).await;
        Ok(results
            .into_iter()
            .map(|r| r.and_then(|()| written.clone()))
            .collect())
    }

    /// Deletes the committed offsets of Empty groups that have outlived their retention, and
    /// groups left with no offsets. Returns how many partitions' offsets were removed.
    ///
    /// An Empty group keeps an offset for `max(offsets_retention_minutes, longest retention.ms of the
    /// topics the group has offsets for)` after it became Empty (or the commit, if later), so a
    /// group that is down keeps its place as long as the broker keeps the messages.
    pub async fn expire_offsets(&self) -> Result<usize, GroupError> {
        let now = self.shared.clock.now_ms();
        let mut records = Vec::new();
        let mut expired = 0;
        let mut dead = Vec::new();
        {
            let mut groups = self.shared.groups.lock();
            self.shared.store.with_map(|map| {
                for (id, group) in groups.iter() {
                    if group.state != GroupState::Empty || !group.pending.is_empty() {
                        continue;
                    }
                    let Some(offsets) = map.get(id) else {
                        dead.push(id.clone());
                        continue;
                    };
                    let Some(retention) =
                        self.group_retention_ms(offsets.keys().map(|(t, _)| t.as_str()))
                    else {
                        continue;
                    };
                    let stale: Vec<&(String, i32)> = offsets
                        .iter()
                        .filter(|(_, v)| {
                            now >= group
                                .state_since_ms
                                .max(v.commit_timestamp_ms)
                                .saturating_add(retention)
                        })
                        .map(|(k, _)| k)
                        .collect();
                    expired += stale.len();
                    if stale.len() == offsets.len() {
                        records.push(OffsetRecord::DeleteGroup { group: id.clone() });
                        dead.push(id.clone());
                    } else {
                        records.extend(stale.into_iter().map(|(topic, partition)| {
                            OffsetRecord::DeletePartition {
                                group: id.clone(),
                                topic: topic.clone(),
                                partition: *partition,
                            }
                        }));
                    }
                }
            });
            for id in &dead {
                if let Some(group) = groups.get_mut(id) {
                    group.set_state(GroupState::Dead, now);
                }
            }
        }
        if expired > 0 {
            tracing::info!(
                partitions = expired,
                "expired committed offsets of empty groups"
            );
        }
        let written = self.shared.store.write(records).await;
        self.remove_dead(&dead);
        written?;
        Ok(expired)
    }

    /// Forgets groups marked Dead once their deletion is on disk (or failed: a Dead group stays
    /// refused either way). Until then a Dead group refuses joins and commits, so nothing can
    /// be committed to it that the queued deletion would then wipe out.
    fn remove_dead(&self, ids: &[String]) {
        let mut groups = self.shared.groups.lock();
        for id in ids {
            if groups.get(id).is_some_and(|g| g.state == GroupState::Dead) {
                groups.remove(id);
            }
        }
    }

    /// How long an Empty group's offsets for these topics are kept; `None` for forever.
    fn group_retention_ms<'a>(&self, topics: impl Iterator<Item = &'a str>) -> Option<i64> {
        let mut retention = self
            .shared
            .config
            .offsets_retention_minutes
            .saturating_mul(60_000);
        for topic in topics {
            match self.shared.topics.retention_ms(topic) {
                Some(ms) if ms < 0 => return None,
                Some(ms) => retention = retention.max(ms),
                None => {}
            }
        }
        Some(retention)
    }
}

fn new_member_id(client_id: &str) -> String {
    let client = if client_id.is_empty() {
        "member"
    } else {
        client_id
    };
    format!("{client}-{}", uuid::Uuid::new_v4())
}

fn add_member(
    group: &mut Group,
    req: JoinRequest,
    member_id: String,
    now: i64,
    delay: i64,
) -> Answer<JoinResponse> {
    let (tx, rx) = oneshot::channel();
    if group.members.is_empty() {
        group.protocol_type = Some(req.protocol_type.clone());
    }
    if let Some(instance) = &req.group_instance_id {
        group
            .static_members
            .insert(instance.clone(), member_id.clone());
    }
    group.members.insert(
        member_id.clone(),
        Member {
            member_id,
            instance_id: req.group_instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocols: req.protocols,
            assignment: Bytes::new(),
            join_waiter: Some(tx),
            sync_waiter: None,
            synced: false,
            last_heartbeat_ms: now,
        },
    );
    group.prepare_rebalance(now, delay);
    group.maybe_complete_join(now);
    Answer::Wait(rx)
}

/// A static member restarting: the new member id replaces the old one (which is fenced), and
/// in a Stable group whose protocol it still supports it gets its old assignment without a
/// rebalance.
fn rejoin_static(
    group: &mut Group,
    req: JoinRequest,
    old_id: String,
    now: i64,
    delay: i64,
) -> Answer<JoinResponse> {
    let Some(mut member) = group.members.remove(&old_id) else {
        return Answer::Now(Err(GroupError::UnknownMemberId));
    };
    let new_id = new_member_id(&req.client_id);
    if let Some(waiter) = member.join_waiter.take() {
        let _ = waiter.send(Err(GroupError::FencedInstanceId));
    }
    if let Some(waiter) = member.sync_waiter.take() {
        let _ = waiter.send(Err(GroupError::FencedInstanceId));
    }
    let old_leader = group.leader.clone().unwrap_or_default();
    let was_leader = old_leader == old_id;
    if was_leader {
        group.leader = Some(new_id.clone());
    }
    if let Some(instance) = &req.group_instance_id {
        group
            .static_members
            .insert(instance.clone(), new_id.clone());
    }
    member.member_id = new_id.clone();
    member.client_id = req.client_id;
    member.client_host = req.client_host;
    member.session_timeout_ms = req.session_timeout_ms;
    member.rebalance_timeout_ms = req.rebalance_timeout_ms;
    member.protocols = req.protocols;
    member.last_heartbeat_ms = now;
    group.members.insert(new_id.clone(), member);
    tracing::info!(old = %old_id, new = %new_id, "static member rejoined with a new member id");

    // As Kafka: the restarted member's metadata may differ (owned partitions, generation), but
    // only a change of the group's protocol needs a new assignment.
    let unchanged = group.select_protocol() == group.protocol_name;
    if group.state == GroupState::Stable && unchanged {
        let mut response = group.current_join_response(&new_id);
        if was_leader {
            if req.skip_assignment_supported {
                // v9+: the leader learns it leads but must not reassign.
                response.skip_assignment = true;
            } else {
                // Older clients: name the old id as leader so the member acts as a follower
                // and fetches its stored assignment with SyncGroup.
                response.leader_id = old_leader;
                response.members.clear();
            }
        }
        return Answer::Now(Ok(response));
    }
    let (tx, rx) = oneshot::channel();
    if let Some(member) = group.members.get_mut(&new_id) {
        member.join_waiter = Some(tx);
    }
    group.prepare_rebalance(now, delay);
    group.maybe_complete_join(now);
    Answer::Wait(rx)
}
