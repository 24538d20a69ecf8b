//! One group's membership state machine: who is in it, which generation, which protocol, who
//! leads, and the JoinGroup/SyncGroup responses still owed to waiting members.

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::coordinator::{JoinMember, JoinResponse, Protocol, SyncResponse};
use super::error::GroupError;

/// Where a group is in the rebalance protocol (the names Kafka clients and tools print).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupState {
    /// No members; the group may still have committed offsets.
    Empty,
    /// Waiting for every known member to (re)join, up to the rebalance timeout.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted or expired.
    Dead,
}

impl GroupState {
    /// The state's name as Kafka prints it (`DescribeGroups`, `ListGroups`).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

pub(crate) type JoinWaiter = oneshot::Sender<Result<JoinResponse, GroupError>>;
pub(crate) type SyncWaiter = oneshot::Sender<Result<SyncResponse, GroupError>>;

#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) session_timeout_ms: i32,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) protocols: Vec<Protocol>,
    pub(crate) assignment: Bytes,
    pub(crate) join_waiter: Option<JoinWaiter>,
    pub(crate) sync_waiter: Option<SyncWaiter>,
    /// Whether the member sent SyncGroup in the current generation.
    pub(crate) synced: bool,
    pub(crate) last_heartbeat_ms: i64,
}

impl Member {
    pub(crate) fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    /// A member waiting for a response is alive by definition; only idle ones can time out.
    fn session_expired(&self, now_ms: i64) -> bool {
        self.join_waiter.is_none()
            && self.sync_waiter.is_none()
            && now_ms >= self.last_heartbeat_ms + i64::from(self.session_timeout_ms)
    }
}

#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) state: GroupState,
    pub(crate) state_since_ms: i64,
    pub(crate) generation: i32,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) leader: Option<String>,
    pub(crate) members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, and when they lapse unless used.
    pub(crate) pending: BTreeMap<String, i64>,
    /// group.instance.id -> current member id.
    pub(crate) static_members: BTreeMap<String, String>,
    rebalance_deadline_ms: i64,
    join_not_before_ms: i64,
    sync_deadline_ms: i64,
}

impl Group {
    pub(crate) fn new(now_ms: i64) -> Group {
        Group {
            state: GroupState::Empty,
            state_since_ms: now_ms,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            static_members: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            join_not_before_ms: 0,
            sync_deadline_ms: 0,
        }
    }

    pub(crate) fn set_state(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_since_ms = now_ms;
    }

    /// Whether a member with these protocols can join: same protocol type, and at least one
    /// protocol every member (and it) supports.
    pub(crate) fn supports(
        &self,
        protocol_type: &str,
        protocols: &[Protocol],
        except: Option<&str>,
    ) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| Some(m.member_id.as_str()) != except)
            .collect();
        if others.is_empty() {
            return true;
        }
        if self
            .protocol_type
            .as_deref()
            .is_some_and(|t| t != protocol_type)
        {
            return false;
        }
        protocols.iter().any(|p| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|q| q.name == p.name))
        })
    }

    /// The protocol every member supports with the most first-choice votes, as Kafka picks it.
    pub(crate) fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|q| q.name == *name))
            })
            .collect();
        let mut votes: Vec<(&str, usize)> = candidates.iter().map(|c| (*c, 0)).collect();
        for member in self.members.values() {
            // Each member votes for the first protocol in its own preference order that all share.
            if let Some(choice) = member
                .protocols
                .iter()
                .find(|p| candidates.contains(&p.name.as_str()))
            {
                if let Some(v) = votes.iter_mut().find(|(c, _)| *c == choice.name) {
                    v.1 += 1;
                }
            }
        }
        // Ties go to the earliest candidate, so the choice does not depend on map order.
        let mut best: Option<(&str, usize)> = None;
        for (name, count) in votes {
            if best.is_none_or(|(_, b)| count > b) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name.to_string())
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    /// Starts a rebalance: every member must rejoin within the rebalance timeout.
    pub(crate) fn prepare_rebalance(&mut self, now_ms: i64, initial_delay_ms: i64) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(Err(GroupError::RebalanceInProgress));
                }
            }
        }
        if self.state == GroupState::Empty {
            // Kafka's group.initial.rebalance.delay.ms: let a starting fleet join in one round.
            self.join_not_before_ms = now_ms + initial_delay_ms;
        }
        if self.state != GroupState::PreparingRebalance {
            self.set_state(GroupState::PreparingRebalance, now_ms);
            self.rebalance_deadline_ms = now_ms + self.max_rebalance_timeout_ms();
        }
    }

    /// Completes the join phase if every known member has rejoined (or time is up).
    pub(crate) fn maybe_complete_join(&mut self, now_ms: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined =
            self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some());
        if (all_joined && now_ms >= self.join_not_before_ms) || now_ms >= self.rebalance_deadline_ms
        {
            self.complete_join(now_ms);
        }
    }

    fn complete_join(&mut self, now_ms: i64) {
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in missing {
            tracing::info!(member = %id, "member did not rejoin within the rebalance timeout; removing it");
            self.remove_member(&id);
        }
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            // Kafka keeps the protocol type of an emptied group: it is still a "consumer"
            // group to ListGroups and DescribeGroups, not a "simple" one.
            self.protocol_name = None;
            self.leader = None;
            self.set_state(GroupState::Empty, now_ms);
            return;
        }
        self.protocol_name = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance, now_ms);
        self.sync_deadline_ms = now_ms + self.max_rebalance_timeout_ms();
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let all: Vec<JoinMember> = self
            .members
            .values()
            .map(|m| JoinMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect();
        let (generation, protocol_type) = (self.generation, self.protocol_type.clone());
        for member in self.members.values_mut() {
            member.last_heartbeat_ms = now_ms;
            member.assignment = Bytes::new();
            member.synced = false;
            if let Some(waiter) = member.join_waiter.take() {
                let is_leader = member.member_id == leader;
                let _ = waiter.send(Ok(JoinResponse {
                    generation_id: generation,
                    protocol_type: protocol_type.clone(),
                    protocol_name: Some(protocol.clone()),
                    leader_id: leader.clone(),
                    member_id: member.member_id.clone(),
                    skip_assignment: false,
                    members: if is_leader { all.clone() } else { Vec::new() },
                }));
            }
        }
    }

    /// The join response for a member of the current generation (a rejoin with nothing changed).
    pub(crate) fn current_join_response(&self, member_id: &str) -> JoinResponse {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        JoinResponse {
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: leader.clone(),
            member_id: member_id.to_string(),
            skip_assignment: false,
            members: if leader == member_id {
                self.members
                    .values()
                    .map(|m| JoinMember {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        metadata: m.metadata_for(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Installs the leader's assignment and answers every member waiting in SyncGroup.
    pub(crate) fn complete_sync(&mut self, assignments: Vec<(String, Bytes)>, now_ms: i64) {
        for (member_id, assignment) in assignments {
            if let Some(member) = self.members.get_mut(&member_id) {
                member.assignment = assignment;
            }
        }
        self.set_state(GroupState::Stable, now_ms);
        let (protocol_type, protocol_name) =
            (self.protocol_type.clone(), self.protocol_name.clone());
        for member in self.members.values_mut() {
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(Ok(SyncResponse {
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: member.assignment.clone(),
                }));
            }
        }
    }

    /// Removes a member; waiting requests of its own are answered UNKNOWN_MEMBER_ID (the
    /// dropped sender does that).
    pub(crate) fn remove_member(&mut self, member_id: &str) -> bool {
        let Some(member) = self.members.remove(member_id) else {
            return false;
        };
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        true
    }

    /// After members left or expired: start (or finish) a rebalance as the state requires.
    pub(crate) fn on_members_removed(&mut self, now_ms: i64, initial_delay_ms: i64) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, initial_delay_ms)
            }
            _ => {}
        }
        self.maybe_complete_join(now_ms);
    }

    /// Applies timeouts: lapsed pending ids, expired sessions, a leader that never synced.
    pub(crate) fn tick(&mut self, now_ms: i64, initial_delay_ms: i64) {
        let pending_before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now_ms);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_expired(now_ms))
            .map(|m| m.member_id.clone())
            .collect();
        for id in &expired {
            tracing::info!(member = %id, "member session timed out; removing it");
            self.remove_member(id);
        }
        if self.state == GroupState::CompletingRebalance && now_ms >= self.sync_deadline_ms {
            let unsynced: Vec<String> = self
                .members
                .values()
                .filter(|m| !m.synced)
                .map(|m| m.member_id.clone())
                .collect();
            for id in &unsynced {
                tracing::info!(member = %id, "member did not sync within the rebalance timeout; removing it");
                self.remove_member(id);
            }
            self.prepare_rebalance(now_ms, initial_delay_ms);
        }
        if !expired.is_empty() || pending_before != self.pending.len() {
            self.on_members_removed(now_ms, initial_delay_ms);
        } else {
            self.maybe_complete_join(now_ms);
        }
    }

    /// Checks that `member_id` (with its static instance id, if any) is the current member.
    pub(crate) fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                Some(current) if current != member_id => return Err(GroupError::FencedInstanceId),
                Some(_) => {}
                None => return Err(GroupError::UnknownMemberId),
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(GroupError::UnknownMemberId)
        }
    }
}
